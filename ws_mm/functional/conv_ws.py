"""Convolution with a weight-standardized weight, as one pure function.

``conv_ws(x, W, ...)`` is ``conv(x, weight_standardization(W))`` (Qiao et
al., arXiv:1903.10520) for every conv type ``torch.convolution`` runs:
1d/2d/3d, grouped, transposed. In the spirit of mmcv's ``conv_ws_2d``, but
made for training: standardization and convolution are one autograd Function
that keeps what a plain conv keeps (the input and ``W``) plus per-filter
statistics. ``W_hat`` is not kept from the forward to the backward (that
would be a second copy of every trainable weight): the backward recomputes
it from the statistics for the conv's backward, then runs the paper's
closed-form WS backward (eq. 14-15), which needs W and the statistics only.
"""
from typing import Callable, NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from .weight_standardization import (WSVariant, _restandardize_rows,
                                     _RowStats, _standardize_rows,
                                     _standardize_rows_backward, _workspace,
                                     filter_rows,
                                     unfilter_rows, weight_standardization)

GradHook = Callable[[Tensor], Optional[Tensor]]


class ConvArgs(NamedTuple):
    """The arguments of ``torch.convolution`` after the input and weights."""
    stride: Sequence[int]
    padding: Sequence[int]
    dilation: Sequence[int]
    transposed: bool
    output_padding: Sequence[int]
    groups: int


def autocast_dtype(x: Tensor) -> Optional[torch.dtype]:
    """The dtype ``torch.autocast`` runs a conv of ``x`` in, if it is on.

    ``torch.convolution`` is not cast by autocast (``F.conv2d`` and friends
    are), so WS convs cast as autocast would, on every device.
    """
    if not x.is_floating_point() or x.dtype == torch.float64:
        return None
    device = x.device.type
    if hasattr(torch, 'get_autocast_dtype'):  # torch >= 2.4: any device
        if (torch.amp.is_autocast_available(device)
                and torch.is_autocast_enabled(device)):
            return torch.get_autocast_dtype(device)
        return None
    if device == 'cpu' and torch.is_autocast_cpu_enabled():
        return torch.get_autocast_cpu_dtype()
    if device == 'cuda' and torch.is_autocast_enabled():
        return torch.get_autocast_gpu_dtype()
    return None


def _autocast(x: Tensor, *tensors: Optional[Tensor]):
    """``x`` and ``tensors`` (``None`` stays ``None``) cast as autocast casts
    a conv's inputs."""
    dtype = autocast_dtype(x)
    if dtype is None:
        return (x, *tensors)
    return tuple(None if t is None else t.to(dtype) for t in (x, *tensors))


def convolution(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                args: ConvArgs) -> Tensor:
    """``torch.convolution``, cast as autocast casts a conv."""
    return torch.convolution(*_autocast(x, weight, bias), *args)


def trains_weight(weight: Tensor) -> bool:
    """Whether a gradient can reach ``weight`` from this call: WS's training
    path (W_hat recomputed in the backward) rather than a constant W_hat."""
    return torch.is_grad_enabled() and weight.requires_grad


class _WSConvolution(torch.autograd.Function):
    """``conv(x, W_hat)`` for training, with W_hat recomputed for the backward.

    ``x`` and ``bias`` arrive already cast (autocast does not reach a custom
    Function's forward); ``hook`` sees the gradient w.r.t. W_hat.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor],
                variant: WSVariant, args: ConvArgs,
                hook: Optional[GradHook]) -> Tensor:
        rows = filter_rows(weight, args.transposed, args.groups)
        w_hat, stats = _standardize_rows(rows, variant, out=_workspace(rows))
        ctx.save_for_backward(x, weight, stats.mean, stats.scale, stats.root)
        ctx.divisor, ctx.variant, ctx.args, ctx.hook = (stats.divisor, variant,
                                                        args, hook)
        ctx.bias_sizes = None if bias is None else list(bias.shape)
        w_hat = unfilter_rows(w_hat, weight.shape, args.transposed, args.groups)
        return torch.convolution(x, w_hat.to(x.dtype), bias, *args)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        # Unpacked once: non-reentrant checkpointing allows no second unpack.
        x, weight, mean, scale, root = ctx.saved_tensors
        args, hook = ctx.args, ctx.hook
        need_x, _, need_bias = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # backward(create_graph=True)
            return _differentiable_backward(ctx, grad_out, x, weight)
        stats = _RowStats(mean, scale, root, ctx.divisor)
        rows = filter_rows(weight, args.transposed, args.groups).to(mean.dtype)
        w_hat = _restandardize_rows(rows, stats, out=_workspace(rows))
        w_hat = unfilter_rows(w_hat, weight.shape, args.transposed,
                              args.groups)
        grad_x, grad_w_hat, grad_bias = torch.ops.aten.convolution_backward(
            grad_out, x, w_hat.to(x.dtype), ctx.bias_sizes, *args,
            [need_x, True, need_bias])
        if hook is not None:
            replaced = hook(grad_w_hat)  # a tensor hook's contract
            if replaced is not None:
                grad_w_hat = replaced
        grad_rows = _standardize_rows_backward(
            filter_rows(grad_w_hat, args.transposed, args.groups), rows, stats)
        grad_w = unfilter_rows(grad_rows, weight.shape, args.transposed,
                               args.groups).to(weight.dtype)
        return grad_x, grad_w, grad_bias, None, None, None


def _differentiable_backward(ctx, grad_out: Tensor, x: Tensor, weight: Tensor):
    """The same gradients, recorded by autograd (the forward recomputed and
    differentiated), so that a penalty on the input gradient can be
    differentiated. W_hat's own backward stays once-differentiable:
    differentiating the gradient w.r.t. W again raises."""
    need_x, _, need_bias = ctx.needs_input_grad[:3]
    args = ctx.args
    w_hat = weight_standardization(weight, ctx.variant,
                                   transposed=args.transposed,
                                   groups=args.groups)
    if ctx.hook is not None:
        w_hat.register_hook(ctx.hook)
    out = torch.convolution(x, w_hat.to(x.dtype), None, *args)
    wrt = (x, weight) if need_x else (weight, )
    grads = torch.autograd.grad(out, wrt, grad_out, create_graph=True)
    grad_bias = None
    if need_bias:
        grad_bias = grad_out.sum([d for d in range(grad_out.dim()) if d != 1])
    return (grads[0] if need_x else None), grads[-1], grad_bias, None, None, None


def conv_ws(x: Tensor, weight: Tensor, bias: Optional[Tensor],
            variant: WSVariant, args: ConvArgs,
            w_hat_hook: Optional[GradHook] = None) -> Tensor:
    """``conv(x, W_hat)`` with ``W_hat`` the weight-standardized ``weight``.

    Args:
        x: the input, already padded if the conv pads other than with
            zeros (``args.padding`` is the convolution's own).
        weight: the raw conv weight ``W`` (torch's layout for ``args``).
        bias: optional, added to the conv output as usual.
        variant: the WS variant
            (:func:`~.weight_standardization.get_ws_variant`).
        args: stride, padding, dilation, transposed, output padding, groups.
        w_hat_hook: called with the gradient w.r.t. ``W_hat`` in the
            backward (it may return a replacement), as a tensor hook on
            ``W_hat`` would be.

    Runs under autocast as a conv does. Without a gradient to compute for
    ``W`` it is ``convolution(x, weight_standardization(W))``.
    """
    if not trains_weight(weight):
        with torch.no_grad():
            w_hat = weight_standardization(weight, variant,
                                           transposed=args.transposed,
                                           groups=args.groups)
        return convolution(x, w_hat, bias, args)
    x, bias = _autocast(x, bias)
    return _WSConvolution.apply(x, weight, bias, variant, args, w_hat_hook)
