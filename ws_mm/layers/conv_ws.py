"""Convolutions with Weight Standardization (WS).

Qiao et al., arXiv:1903.10520. The layer holds the raw weight ``W`` (that is
what the optimizer updates and what checkpoints store) and convolves with the
standardized ``W_hat`` of :func:`ws_mm.functional.weight_standardization`.
There is no affine on ``W_hat``: a normalization layer is expected to follow.

In training, ``W_hat`` is not kept from the forward to the backward (that
would be a second copy of every trainable weight): the backward recomputes it.

When no gradient can reach ``W`` (eval under ``torch.no_grad()`` or
``inference_mode()``, or a frozen weight) ``W_hat`` is a constant, so it is
computed once and reused until the weight changes. The cache is keyed on the
weight's storage, dtype and autograd version counter, so an optimizer step,
an in-place edit, ``load_state_dict`` and ``.to()`` / ``.half()`` all
invalidate it. Edits through ``weight.data`` bypass the version counter (as
they bypass autograd): call ``module.train()`` / ``.eval()`` afterwards, which
clears the cache, or edit under ``torch.no_grad()`` instead.
"""
import weakref
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import Tensor, nn

from ..functional.weight_standardization import (get_ws_variant,
                                                 weight_standardization)


_MODIFIED = ('{} needed for the backward of a WS conv was modified in place '
             'after its forward (version {} -> {}); modify it out of place, '
             'or after backward()')


def _recompute_when_unpacked(w_hat: Tensor, weight: Tensor,
                             standardize: Callable[[Tensor], Tensor]):
    """Saved-tensor hooks that keep ``w_hat`` as a recipe, not a tensor.

    Everything else is kept as autograd would keep it, with autograd's check
    that it was not modified in place in between (hooks bypass that check).
    Under ``backward(create_graph=True)`` the recomputed W_hat is
    differentiable again, so higher-order gradients stay correct.
    """
    # autograd keeps the hooks until the backward: a strong reference to
    # w_hat here would keep it alive all the same.
    w_hat_ref = weakref.ref(w_hat)

    def pack(tensor: Tensor):
        if tensor is w_hat_ref():
            return weight, weight._version, None
        return tensor, tensor._version, tensor

    def unpack(packed) -> Tensor:
        tensor, version, kept = packed
        if tensor._version != version:
            what = 'the weight' if kept is None else 'a tensor'
            raise RuntimeError(_MODIFIED.format(what, version, tensor._version))
        return standardize(weight) if kept is None else kept

    return pack, unpack


class _WSConvMixin:
    """The WS part shared by every WS conv: validation, W_hat, the cache.

    Mixed in before a torch conv class, whose arguments it passes through.
    """

    _announced = False
    # A hook on the gradient w.r.t. W_hat, set only while something observes
    # it (ws_mm's WSGradientHook): one attribute check per training forward.
    w_hat_grad_hook = None

    def __init__(self, *args, eps: Optional[float] = None, variant: str = 'A',
                 **kwargs):
        super().__init__(*args, **kwargs)
        spec = get_ws_variant(variant, eps)
        fan_in = self.weight.numel() // (self.out_channels or 1)
        if fan_in < 2:
            raise ValueError(
                f'{type(self).__name__}: each filter has {fan_in} weight, and '
                'weight standardization of a single weight is undefined (it '
                'is always 0); use a plain conv for this layer')
        self.ws_variant = variant
        self.ws_eps = spec.eps
        self._ws_cache = None
        if not _WSConvMixin._announced:
            _WSConvMixin._announced = True
            print_log('ws_mm: weight-standardized convs (ConvWS and its '
                      f'variants) are built by {__name__}', logger='current')

    def _standardize(self, weight: Tensor) -> Tensor:
        if not self.transposed:
            return weight_standardization(weight, self.ws_variant, self.ws_eps)
        # A transposed conv stores (in, out / groups, *k); the filter of output
        # channel o in group g is weight[g-th block of inputs, o]: bring the
        # output channels to the front, standardize, and put them back.
        cin, cout_g, *kernel = weight.shape
        grouped = weight.view(self.groups, cin // self.groups, cout_g, *kernel)
        filters = grouped.transpose(1, 2)
        w_hat = weight_standardization(
            filters.reshape(-1, *filters.shape[2:]), self.ws_variant,
            self.ws_eps)
        return w_hat.view(filters.shape).transpose(1, 2).reshape(weight.shape)

    def standardized_weight(self) -> Tensor:
        """``W_hat``: differentiable in training, cached when it is constant."""
        weight = self.weight
        if torch.is_grad_enabled() and weight.requires_grad:
            w_hat = self._standardize(weight)
            if self.w_hat_grad_hook is not None:
                w_hat.register_hook(self.w_hat_grad_hook)
            return w_hat
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

    def _conv_with_standardized_weight(self, conv: Callable[[Tensor], Tensor]):
        """``conv(W_hat)``; in training W_hat is recomputed for the backward.

        The conv would keep W_hat alive until its backward, a second copy of
        every trainable weight (+12% peak memory in Mask R-CNN R-50-FPN at
        320x320). It is recomputed instead, at the cost of one forward
        standardization, unless other saved-tensor hooks (non-reentrant
        activation checkpointing) already manage what is kept.
        """
        w_hat = self.standardized_weight()
        # torch has no public query for active hooks; this private one is the
        # one torch's own AOTAutograd uses.
        if (not w_hat.requires_grad
                or torch._C._autograd._top_saved_tensors_default_hooks(False)):
            return conv(w_hat)
        with torch.autograd.graph.saved_tensors_hooks(
                *_recompute_when_unpacked(w_hat, self.weight, self._standardize)):
            return conv(w_hat)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_with_standardized_weight(
            lambda w_hat: self._conv_forward(x, w_hat, self.bias))

    def train(self, mode: bool = True):
        self._ws_cache = None
        return super().train(mode)

    def extra_repr(self) -> str:
        return (super().extra_repr() +
                f', ws_variant={self.ws_variant}, ws_eps={self.ws_eps:g}')


class ConvWS1d(_WSConvMixin, nn.Conv1d):
    """``nn.Conv1d`` with Weight Standardization (point clouds, sequences)."""


class ConvWS2d(_WSConvMixin, nn.Conv2d):
    """``nn.Conv2d`` with Weight Standardization.

    A drop-in for mmcv's ``ConvWS2d`` (registered as ``ConvWS``): the same
    positional arguments, ``eps`` in ninth place, the same state-dict keys and,
    with the default ``variant='A'``, the same outputs. ``variant`` selects the
    standardization of another published checkpoint family (``'B'``: the
    official BCN+WS ImageNet models, ``'C'``: BiT / timm); ``eps=None`` takes
    the variant's own default.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size,
                 stride=1, padding=0, dilation=1, groups: int = 1,
                 bias: bool = True, eps: Optional[float] = None,
                 variant: str = 'A', **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, bias, eps=eps,
                         variant=variant, **kwargs)


class ConvWS3d(_WSConvMixin, nn.Conv3d):
    """``nn.Conv3d`` with Weight Standardization (video)."""


class ConvTransposeWS2d(_WSConvMixin, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with Weight Standardization (decoders).

    Each output channel is standardized over its fan-in (the input channels of
    its group times the kernel), as for a forward conv.
    """

    def forward(self, x: Tensor,
                output_size: Optional[List[int]] = None) -> Tensor:
        output_padding = self._output_padding(x, output_size, self.stride,
                                              self.padding, self.kernel_size,
                                              2, self.dilation)
        return self._conv_with_standardized_weight(
            lambda w_hat: F.conv_transpose2d(x, w_hat, self.bias, self.stride,
                                             self.padding, output_padding,
                                             self.groups, self.dilation))


WS_CONVS = (ConvWS1d, ConvWS2d, ConvWS3d, ConvTransposeWS2d)
