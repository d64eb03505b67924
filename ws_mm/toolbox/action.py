"""mmaction2's ResNets and TSM's optimizer, fixed for GN, BCN and WS.

Import with ``custom_imports = dict(imports=['ws_mm', 'ws_mm.toolbox.action'])``
(it imports mmaction's models, which a plain ``import ws_mm`` does not). It
re-registers, under mmaction's own names, subclasses that change only what
fails under a norm other than BN, so mmaction's configs switch by their
``conv_cfg`` / ``norm_cfg`` lines:

- ``ResNet`` / ``ResNetTSM``: ``frozen_stages >= 0`` freezes the stem's norm
  whatever its name (mmaction looks up ``conv1.bn``);
- ``ResNet3d``: ``zero_init_residual`` zeroes each block's last norm
  whatever its name (mmaction looks up ``conv3.bn`` / ``conv2.bn``);
- all three: a torchvision-layout ImageNet load (``torchvision_pretrain``,
  ``pretrained2d``) into a model whose norm is not BN is refused when the
  model is built. mmaction's loaders would raise on ``.bn`` or, for
  ``ResNetTSM``, load with ``strict=False`` and drop every norm parameter.
  Such models start from a file of their own norm through
  ``init_cfg=dict(type='AuthorsPretrained', checkpoint=...)``
  (:mod:`.pretrained`, which knows mmaction's layout);
- ``TSMOptimWrapperConstructor``: TSM's parameter groups with every
  normalization layer's parameters in the norm group. mmaction's raises for
  ``EstimatedBatchNorm`` (BCN's estimate mode) and leaves BCN's group affine
  out of the optimizer in batch mode.

With BN, every class behaves as mmaction's.
"""
from mmcv.cnn import ConvModule
from mmengine.model.weight_init import constant_init
from mmengine.utils.dl_utils.parrots_wrapper import (SyncBatchNorm_,
                                                     _BatchNorm, _ConvNd)
from torch import nn

import mmaction.models  # noqa: F401  (registers mmaction's own first)
from mmaction.engine.optimizers import TSMOptimWrapperConstructor as _TSMOWC
from mmaction.models import backbones
from mmaction.models.backbones.resnet3d import BasicBlock3d, Bottleneck3d
from mmaction.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

from ..layers import BatchChannelNorm, EstimatedBatchNorm
from .pretrained import NORM_NAMES, model_norm

#: Layers whose parameters TSM's rule puts in the norm group (lr, no decay).
NORMS = (_BatchNorm, SyncBatchNorm_, nn.GroupNorm, BatchChannelNorm,
         EstimatedBatchNorm)


def refuse_torchvision_file(model: nn.Module, switch: str) -> None:
    """Raise if ``model`` would load a BN ResNet's torchvision-layout file
    while its own norm is not BN (``switch`` turns that load off)."""
    norm = model_norm(model)
    if norm in (None, 'bn'):
        return
    raise ValueError(
        f'{type(model).__name__} with {NORM_NAMES[norm]} layers would load '
        f'{model.pretrained!r} as a torchvision ResNet, which has BN layers: '
        "mmaction's loader cannot place its norm parameters in this model "
        f'(and would drop them without a word). Set pretrained=None, '
        f"{switch}=False and init_cfg=dict(type='AuthorsPretrained', "
        f'checkpoint=...) with an ImageNet file of {NORM_NAMES[norm]} '
        'layers, or train from scratch.')


def freeze_stages(model: nn.Module) -> None:
    """mmaction's ``ResNet._freeze_stages`` with the stem's norm found
    under any name."""
    if model.frozen_stages >= 0:
        model.conv1.norm.eval()
        for param in model.conv1.parameters():
            param.requires_grad = False
    for i in range(1, model.frozen_stages + 1):
        stage = getattr(model, f'layer{i}')
        stage.eval()
        for param in stage.parameters():
            param.requires_grad = False


@MODELS.register_module(force=True)
class ResNet(backbones.ResNet):
    __doc__ = backbones.ResNet.__doc__

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(self.pretrained, str) and self.torchvision_pretrain:
            refuse_torchvision_file(self, 'torchvision_pretrain')

    _freeze_stages = freeze_stages


@MODELS.register_module(force=True)
class ResNetTSM(backbones.ResNetTSM):
    __doc__ = backbones.ResNetTSM.__doc__

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.pretrained2d:  # loads self.pretrained whatever it is
            refuse_torchvision_file(self, 'pretrained2d')

    _freeze_stages = freeze_stages


@MODELS.register_module(force=True)
class ResNet3d(backbones.ResNet3d):
    __doc__ = backbones.ResNet3d.__doc__

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(self.pretrained, str) and self.pretrained2d:
            refuse_torchvision_file(self, 'pretrained2d')

    def init_weights(self, pretrained=None):
        zero = self.zero_init_residual
        self.zero_init_residual = False  # mmaction's looks up conv3.bn
        try:
            super().init_weights(pretrained)
        finally:
            self.zero_init_residual = zero
        if zero and self.pretrained is None:
            for m in self.modules():
                if isinstance(m, (Bottleneck3d, BasicBlock3d)):
                    last = m.conv3 if isinstance(m, Bottleneck3d) else m.conv2
                    constant_init(last.norm, 0)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module(force=True)
class TSMOptimWrapperConstructor(_TSMOWC):
    """TSM's parameter groups (mmaction's ``TSMOptimWrapperConstructor``):

    1. the first conv: lr, decay;
    2. the parameters of every normalization layer (:data:`NORMS`, BCN's
       group affine and its per-channel stage included) that train: lr, no
       decay;
    3. other conv and linear weights: lr, decay; their biases: 2x lr, no
       decay;
    4. with ``paramwise_cfg=dict(fc_lr5=True)``, the last linear layer (the
       head's fc): 5x lr for its weight, 10x lr for its bias, no decay.

    Each parameter is taken from the module that holds it, so none is left
    out; a module of another kind with parameters raises, as mmaction's.
    """

    def add_params(self, params, model, **kwargs):
        first_conv, weights, biases, norms = [], [], [], []
        for module in model.modules():
            own = list(module.parameters(recurse=False))
            if not own:
                continue
            if isinstance(module, NORMS):
                norms += [p for p in own if p.requires_grad]
            elif isinstance(module, (_ConvNd, nn.Linear)):
                group = weights
                if isinstance(module, _ConvNd) and not first_conv:
                    group = first_conv
                group.append((module.weight, module.bias))
            else:
                raise ValueError(f'New atomic module type: {type(module)}. '
                                 'Need to give it a learning policy')
        *weights, last_fc = weights
        lr5 = []
        if self.paramwise_cfg['fc_lr5']:
            lr5 = [last_fc]
        else:
            weights.append(last_fc)
        lr, wd = self.base_lr, self.base_wd
        for group, weight_lr, bias_lr in ((first_conv, lr, 2 * lr),
                                          (weights, lr, 2 * lr)):
            params.append(dict(params=[w for w, _ in group], lr=weight_lr,
                               weight_decay=wd))
            params.append(dict(params=[b for _, b in group if b is not None],
                               lr=bias_lr, weight_decay=0))
        params.append(dict(params=norms, lr=lr, weight_decay=0))
        params.append(dict(params=[w for w, _ in lr5], lr=5 * lr,
                           weight_decay=wd))
        params.append(dict(params=[b for _, b in lr5 if b is not None],
                           lr=10 * lr, weight_decay=0))
