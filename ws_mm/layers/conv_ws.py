"""Convolutions with Weight Standardization (WS).

Qiao et al., arXiv:1903.10520. A WS conv holds the raw weight ``W`` (what the
optimizer updates and checkpoints store) and convolves with the standardized
``W_hat`` (:func:`ws_mm.functional.conv_ws`). There is no affine on
``W_hat``: a normalization layer is expected to follow.

When no gradient can reach ``W`` (eval under ``torch.no_grad()`` or
``inference_mode()``, or a frozen weight) ``W_hat`` is a constant, so it is
computed once and reused until the weight changes (a trainable weight in
training mode is never cached: it changes every step). The cache is keyed on
the weight's storage and autograd version counter, so an optimizer step, an
in-place edit, ``load_state_dict`` and ``.to()`` / ``.half()`` (a new
storage) all invalidate it. Edits through ``weight.data`` bypass the version
counter (as they bypass autograd): call ``module.train()`` / ``.eval()``
afterwards, which clears the cache, or edit under ``torch.no_grad()``
instead.
"""
import logging
from collections import OrderedDict
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ..functional.conv_ws import (ConvArgs, conv_ws, convolution,
                                  trains_weight)
from ..functional.weight_standardization import (get_ws_variant,
                                                 weight_standardization)

logger = logging.getLogger('ws_mm')


class WSConvMixin:
    """The WS part shared by every WS conv: validation, W_hat, the cache,
    gradient observers and folding.

    Mixed in before a torch conv class (:attr:`plain`), whose arguments it
    passes through.
    """

    plain: type  # the torch conv class a WS conv computes at inference
    _announced = False

    def __init__(self, *args, eps: Optional[float] = None, variant: str = 'A',
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.variant = get_ws_variant(variant, eps)
        fan_in = self.weight.numel() // (self.out_channels or 1)
        if fan_in < 2:
            raise ValueError(
                f'{type(self).__name__}: each filter has {fan_in} weight, and '
                'weight standardization of a single weight is undefined (it '
                'is always 0); use a plain conv for this layer')
        self._ws_cache = None
        self._w_hat_grad_hooks = OrderedDict()
        if not WSConvMixin._announced:
            WSConvMixin._announced = True
            logger.info('ws_mm: weight-standardized convs (ConvWS and its '
                        'variants) are built by %s', __name__)

    def register_w_hat_grad_hook(
            self, hook: Callable[[Tensor], Optional[Tensor]]
    ) -> RemovableHandle:
        """Call ``hook(grad)`` with the gradient w.r.t. ``W_hat`` in every
        training backward, as a tensor hook on ``W_hat`` would be (it may
        return a replacement). ``handle.remove()`` removes it."""
        handle = RemovableHandle(self._w_hat_grad_hooks)
        self._w_hat_grad_hooks[handle.id] = hook
        return handle

    def _w_hat_hook(self):
        if not self._w_hat_grad_hooks:  # the usual case: one check a forward
            return None
        hooks = list(self._w_hat_grad_hooks.values())

        def run(grad):
            for hook in hooks:
                replaced = hook(grad)
                grad = grad if replaced is None else replaced
            return grad
        return run

    def _standardize(self, weight: Tensor) -> Tensor:
        return weight_standardization(weight, self.variant,
                                      transposed=self.transposed,
                                      groups=self.groups)

    def standardized_weight(self) -> Tensor:
        """``W_hat``: differentiable when W needs a gradient, cached when it
        is constant (the layer's forward uses it only then)."""
        weight = self.weight
        if trains_weight(weight) or (weight.requires_grad and self.training):
            # In training without grad (the first pass of reentrant
            # checkpointing) W changes at the next step: a cache would only
            # keep a second copy of W alive.
            return self._standardize(weight)
        # The cache holds its source weight, which keeps that storage alive:
        # a weight moved by .to() / .half() or replaced cannot have the same
        # data_ptr, and in-place edits bump the version counter.
        cache = self._ws_cache
        if (cache is not None and cache[1] == weight._version
                and cache[0].data_ptr() == weight.data_ptr()):
            return cache[2]
        # Outside inference mode, so the cache can serve later training steps
        # of a frozen layer (inference tensors cannot be saved for backward).
        with torch.inference_mode(False), torch.no_grad():
            w_hat = self._standardize(weight)
        self._ws_cache = (weight.detach(), weight._version, w_hat)
        return w_hat

    def _pad(self, x: Tensor):
        """``x`` padded as the torch conv pads it, and the conv's own padding.

        Zero padding given as numbers (or a symmetric ``'same'``) is left to
        the convolution; other padding modes and an asymmetric ``'same'`` pad
        the input first, as ``torch.nn.Conv*d`` does.
        """
        if not isinstance(self.padding, str) and self.padding_mode == 'zeros':
            return x, self.padding
        no_padding = (0, ) * len(self.kernel_size)
        pad = self._reversed_padding_repeated_twice
        if self.padding_mode == 'zeros':  # 'same' or 'valid'
            if pad[0::2] == pad[1::2]:
                return x, tuple(pad[0::2][::-1])
            return F.pad(x, pad), no_padding
        return F.pad(x, pad, mode=self.padding_mode), no_padding

    def _ws_forward(self, x: Tensor, output_padding) -> Tensor:
        x, padding = self._pad(x)
        args = ConvArgs(self.stride, padding, self.dilation, self.transposed,
                        output_padding, self.groups)
        if trains_weight(self.weight):
            return conv_ws(x, self.weight, self.bias, self.variant, args,
                           self._w_hat_hook())
        return convolution(x, self.standardized_weight(), self.bias, args)

    def forward(self, x: Tensor) -> Tensor:
        return self._ws_forward(x, self.output_padding)

    def train(self, mode: bool = True):
        self._ws_cache = None
        return super().train(mode)

    def fold_(self) -> nn.Module:
        """Become, in place, the :attr:`plain` conv this layer computes: its
        weight (the same ``Parameter``) now holds ``W_hat``. Outputs are
        unchanged up to float rounding; training is not (the folded conv no
        longer standardizes): for inference and export."""
        with torch.no_grad():
            self.weight.copy_(self._standardize(self.weight))
        for name in ('variant', '_ws_cache', '_w_hat_grad_hooks'):
            delattr(self, name)
        self.__class__ = self.plain
        return self

    def extra_repr(self) -> str:
        return (super().extra_repr() +
                f', variant={self.variant.name}, eps={self.variant.eps:g}')


class ConvWS1d(WSConvMixin, nn.Conv1d):
    """``nn.Conv1d`` with Weight Standardization (point clouds, sequences).

    Args: those of ``nn.Conv1d``, and ``eps``, ``variant`` as
    :class:`ConvWS2d`'s.
    """
    plain = nn.Conv1d


class ConvWS2d(WSConvMixin, nn.Conv2d):
    """``nn.Conv2d`` with Weight Standardization (arXiv:1903.10520, eq. 5-7).

    A drop-in for mmcv's ``ConvWS2d`` (registered as ``ConvWS``): the same
    positional arguments, ``eps`` in ninth place, the same state-dict keys
    and, with the default ``variant='A'``, the same outputs.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation,
            groups, bias: as ``nn.Conv2d``'s (``padding_mode``, ``device``,
            ``dtype`` are accepted as keywords).
        eps: added to the filters' standard deviation; ``None`` takes the
            variant's own.
        variant: how the standard deviation is formed, ``'A'`` (mmcv's),
            ``'B'`` or ``'C'``
            (:data:`ws_mm.functional.weight_standardization.WS_VARIANTS`;
            docs/layers.md says which checkpoints need which).
    """
    plain = nn.Conv2d

    def __init__(self, in_channels: int, out_channels: int, kernel_size,
                 stride=1, padding=0, dilation=1, groups: int = 1,
                 bias: bool = True, eps: Optional[float] = None,
                 variant: str = 'A', **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, bias, eps=eps,
                         variant=variant, **kwargs)


class ConvWS3d(WSConvMixin, nn.Conv3d):
    """``nn.Conv3d`` with Weight Standardization (video).

    Args: those of ``nn.Conv3d``, and ``eps``, ``variant`` as
    :class:`ConvWS2d`'s.
    """
    plain = nn.Conv3d


class ConvTransposeWS2d(WSConvMixin, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with Weight Standardization (decoders).

    Each output channel is standardized over its fan-in (the input channels
    of its group times the kernel), as for a forward conv.

    Args: those of ``nn.ConvTranspose2d``, and ``eps``, ``variant`` as
    :class:`ConvWS2d`'s.
    """
    plain = nn.ConvTranspose2d

    def forward(self, x: Tensor,
                output_size: Optional[List[int]] = None) -> Tensor:
        output_padding = self._output_padding(x, output_size, self.stride,
                                              self.padding, self.kernel_size,
                                              2, self.dilation)
        return self._ws_forward(x, output_padding)


# The WS family: registration (under the class names; mmcv's ``ConvWS`` is
# added by the registry), folding and the fold tool all derive from it.
WS_CONVS = (ConvWS1d, ConvWS2d, ConvWS3d, ConvTransposeWS2d)
