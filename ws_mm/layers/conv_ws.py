"""Convolutions with Weight Standardization (WS).

Qiao et al., arXiv:1903.10520. The layer holds the raw weight ``W`` (that is
what the optimizer updates and what checkpoints store) and convolves with the
standardized ``W_hat`` of :func:`ws_mm.functional.weight_standardization`.
There is no affine on ``W_hat``: a normalization layer is expected to follow.

In training, standardization and convolution are one autograd function
(:class:`_WSConvolution`) that keeps what a plain conv keeps (the input and
``W``) plus per-filter statistics: ``W_hat`` is not kept from the forward to
the backward (that would be a second copy of every trainable weight), the
backward recomputes it from the statistics in one pass.

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
from typing import List, Optional

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import Tensor, nn

from ..functional.weight_standardization import (RowStats, get_ws_variant,
                                                 restandardize_rows,
                                                 standardize_rows,
                                                 standardize_rows_backward,
                                                 weight_standardization)


def _autocast_dtype(x: Tensor) -> Optional[torch.dtype]:
    """The dtype ``torch.autocast`` runs a conv of ``x`` in, if it is on.

    ws_mm calls ``torch.convolution``, which autocast does not cast on CPU
    (it casts ``F.conv2d`` and friends), so the layer casts as autocast
    would, on every device.
    """
    device = x.device.type
    if (torch.amp.is_autocast_available(device)
            and torch.is_autocast_enabled(device) and x.is_floating_point()
            and x.dtype != torch.float64):
        return torch.get_autocast_dtype(device)
    return None


class _WSConvolution(torch.autograd.Function):
    """``conv(x, W_hat)`` for training, with W_hat recomputed for the backward.

    Saves the input, ``W`` and the per-filter statistics. The backward
    recomputes W_hat from the statistics (one pass, bit-equal to the
    forward's), runs the convolution's backward with it, then the paper's
    closed-form WS backward, written over the recomputed W_hat.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor],
                layer: '_WSConvMixin', conv_args: tuple) -> Tensor:
        w_hat, stats = standardize_rows(layer._filters(weight),
                                        layer._ws_spec())
        ctx.save_for_backward(x, weight, stats.mean, stats.scale, stats.root)
        ctx.ddof, ctx.layer, ctx.conv_args = stats.ddof, layer, conv_args
        ctx.bias_sizes = None if bias is None else list(bias.shape)
        return torch.convolution(x, layer._unfilter(w_hat, weight).to(x.dtype),
                                 bias, *conv_args)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        # Unpacked once: non-reentrant checkpointing allows no second unpack.
        x, weight, mean, scale, root = ctx.saved_tensors
        layer, hook = ctx.layer, ctx.layer.w_hat_grad_hook
        need_x, _, need_bias = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # backward(create_graph=True)
            return _WSConvolution._differentiable_backward(ctx, grad_out, x,
                                                           weight)
        stats = RowStats(mean, scale, root, ctx.ddof)
        rows = restandardize_rows(layer._filters(weight), stats)
        grad_x, grad_w_hat, grad_bias = torch.ops.aten.convolution_backward(
            grad_out, x, layer._unfilter(rows, weight).to(x.dtype),
            ctx.bias_sizes, *ctx.conv_args, [need_x, True, need_bias])
        if hook is not None:
            grad_w_hat = _call_hook(hook, grad_w_hat)
        grad_rows = standardize_rows_backward(layer._filters(grad_w_hat), rows,
                                              stats)
        grad_w = layer._unfilter(grad_rows, weight).to(weight.dtype)
        return grad_x, grad_w, grad_bias, None, None

    @staticmethod
    def _differentiable_backward(ctx, grad_out: Tensor, x: Tensor,
                                 weight: Tensor):
        """The same gradients, recorded by autograd (a recomputation of the
        forward, differentiated by autograd), so that a penalty on the input
        gradient can be differentiated. W_hat's own backward stays
        ``once_differentiable``: differentiating the gradient w.r.t. W again
        (a penalty on it, Hessian-vector products) raises."""
        need_x, _, need_bias = ctx.needs_input_grad[:3]
        w_hat = ctx.layer._standardize(weight)
        if ctx.layer.w_hat_grad_hook is not None:
            w_hat.register_hook(ctx.layer.w_hat_grad_hook)
        out = torch.convolution(x, w_hat.to(x.dtype), None, *ctx.conv_args)
        wrt = (x, weight) if need_x else (weight, )
        grads = torch.autograd.grad(out, wrt, grad_out, create_graph=True)
        grad_bias = None
        if need_bias:
            grad_bias = grad_out.sum(
                [d for d in range(grad_out.dim()) if d != 1])
        return ((grads[0] if need_x else None), grads[-1], grad_bias, None,
                None)


def _call_hook(hook, grad: Tensor) -> Tensor:
    """A tensor hook's contract: it may return a replacement gradient."""
    replaced = hook(grad)
    return grad if replaced is None else replaced


class _WSConvMixin:
    """The WS part shared by every WS conv: validation, W_hat, the cache.

    Mixed in before a torch conv class, whose arguments it passes through.
    """

    _announced = False
    # A hook on the gradient w.r.t. W_hat, set only while something observes
    # it (ws_mm's WSGradientHook): one attribute check per training backward.
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

    def _ws_spec(self):
        return get_ws_variant(self.ws_variant, self.ws_eps)

    def _filters(self, weight: Tensor) -> Tensor:
        """The weight as a ``(filters, fan_in)`` matrix, a row per output
        channel: the rows that WS standardizes."""
        if not self.transposed:
            return weight.reshape(weight.shape[0], -1)
        # A transposed conv stores (in, out / groups, *k); the filter of output
        # channel o in group g is weight[g-th block of inputs, o].
        cin, cout_g = weight.shape[:2]
        grouped = weight.reshape(self.groups, cin // self.groups, cout_g, -1)
        return grouped.transpose(1, 2).reshape(self.groups * cout_g, -1)

    def _unfilter(self, rows: Tensor, weight: Tensor) -> Tensor:
        """The inverse of :meth:`_filters`: rows back in ``weight``'s shape."""
        if not self.transposed:
            return rows.view(weight.shape)
        cin, cout_g = weight.shape[:2]
        grouped = rows.view(self.groups, cout_g, cin // self.groups, -1)
        return grouped.transpose(1, 2).reshape(weight.shape)

    def _standardize(self, weight: Tensor) -> Tensor:
        """W_hat of ``weight``, differentiable."""
        return self._unfilter(
            weight_standardization(self._filters(weight), self.ws_variant,
                                   self.ws_eps), weight)

    def standardized_weight(self) -> Tensor:
        """``W_hat``: differentiable when W needs a gradient, cached when it
        is constant (the layer's forward uses it only then)."""
        weight = self.weight
        if torch.is_grad_enabled() and weight.requires_grad:
            return self._standardize(weight)
        if self.training and weight.requires_grad:
            # A no-grad forward in training (the first pass of reentrant
            # checkpointing): W changes at the next step, so a cache would
            # only keep a second copy of W alive.
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

    def _ws_convolution(self, x: Tensor, output_padding) -> Tensor:
        x, padding = self._pad(x)
        bias, dtype = self.bias, _autocast_dtype(x)
        if dtype is not None:
            x = x.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        conv_args = (self.stride, padding, self.dilation, self.transposed,
                     output_padding, self.groups)
        if torch.is_grad_enabled() and self.weight.requires_grad:
            return _WSConvolution.apply(x, self.weight, bias, self, conv_args)
        w_hat = self.standardized_weight()
        return torch.convolution(x, w_hat if dtype is None else w_hat.to(dtype),
                                 bias, *conv_args)

    def forward(self, x: Tensor) -> Tensor:
        return self._ws_convolution(x, self.output_padding)

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
        return self._ws_convolution(x, output_padding)


WS_CONVS = (ConvWS1d, ConvWS2d, ConvWS3d, ConvTransposeWS2d)
