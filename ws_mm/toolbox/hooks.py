"""WSGradientHook: what Weight Standardization does to each layer's gradient.

The paper's argument (arXiv:1903.10520, eq. 14-15) is about the gradient
WS passes back: dL/dW is dL/dW_hat with its components along 1 and W_hat
removed (a projection, which only shrinks it), divided by the filter's
standard deviation sigma. The hook shows that per WS layer, every
``interval`` training iterations:

- ``grad_ratio``: ``||dL/dW|| / ||dL/dW_hat||``, that is, the projection's
  shrinking (at most 1) over sigma: with weights of std ~0.03 it is well
  above 1, and it follows how sigma, and so the effective step size, evolves;
- ``weight_mean`` and ``weight_std``: the raw weight's statistics (WS makes
  the conv independent of them; the optimizer still moves them).

Per-layer values go to the runner's visualizer (``vis_data/scalars.json``,
TensorBoard, ...) as ``ws/<layer>/<name>``, and a one-line summary to its
logger. Enable it in any config with::

    custom_hooks = [dict(type='WSGradientHook', interval=50)]

Between logging iterations it costs nothing: the gradient hooks exist only
during the iterations it logs. With DDP the gradients it sees are the local
ones, before they are averaged across processes.
"""
from typing import Dict, Optional

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ..functional.validate import positive_int
from ..layers.conv_ws import WS_CONVS


@HOOKS.register_module()
class WSGradientHook(Hook):
    """Log the gradient-norm reduction of WS per layer (see module doc).

    Args:
        interval: log every ``interval`` training iterations.
    """

    priority = 'NORMAL'

    def __init__(self, interval: int = 50):
        self.interval = positive_int('WSGradientHook', 'interval', interval)
        self._norms: Dict[str, Dict[str, float]] = {}
        self._handles = []

    def _ws_layers(self, runner):
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        return [(name, m) for name, m in model.named_modules()
                if isinstance(m, WS_CONVS) and m.weight.requires_grad]

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        if not self.every_n_train_iters(runner, self.interval):
            return
        self._norms = {}
        for name, layer in self._ws_layers(runner):
            norms = self._norms.setdefault(name, {'w': 0.0, 'w_hat': 0.0})

            def record(key, norms=norms):
                # Squared norms add up over the calls of a shared layer.
                def hook(grad):
                    norms[key] += float(grad.detach().double().square().sum())
                return hook

            self._handles += [
                layer.register_w_hat_grad_hook(record('w_hat')),
                layer.weight.register_hook(record('w'))
            ]

    def after_train_iter(self, runner, batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        if not self._norms:
            return
        for handle in self._handles:
            handle.remove()
        self._handles = []
        scalars, ratios = {}, {}
        for name, layer in self._ws_layers(runner):
            norms = self._norms.get(name)
            if norms and norms['w_hat'] > 0:
                ratios[name] = (norms['w'] / norms['w_hat'])**0.5
                scalars[f'ws/{name}/grad_ratio'] = ratios[name]
            with torch.no_grad():
                weight = layer.weight.detach().float()
                scalars[f'ws/{name}/weight_mean'] = float(weight.mean())
                scalars[f'ws/{name}/weight_std'] = float(weight.std())
        self._norms = {}
        runner.visualizer.add_scalars(scalars, step=runner.iter + 1)
        if ratios:
            lo = min(ratios, key=ratios.get)
            hi = max(ratios, key=ratios.get)
            mean = sum(ratios.values()) / len(ratios)
            runner.logger.info(
                f'WS ||dL/dW|| / ||dL/dW_hat|| over {len(ratios)} layers: '
                f'mean {mean:.4g}, min {ratios[lo]:.4g} ({lo}), '
                f'max {ratios[hi]:.4g} ({hi})')
