"""Weight Standardization as a pure function.

Qiao et al., "Micro-Batch Training with Batch-Channel Normalization and Weight
Standardization", arXiv:1903.10520, eq. 5-7. Each output filter ``W[i]`` of a
convolution is standardized over its fan-in (input channels x kernel):

    W_hat[i] = (W[i] - mean(W[i])) / s(W[i])

Public code disagrees on ``s``, and the difference is visible in the outputs,
so the variant is a parameter (see :data:`WS_VARIANTS`):

* ``'A'``: ``s = std_unbiased + eps``, eps 1e-5. The official WS code, mmcv's
  ``ConvWS2d``, mmdet's gn+ws model zoo and the JHU GN+WS ImageNet checkpoints.
* ``'B'``: ``s = sqrt(var_unbiased + eps)``, eps 1e-5. The form of eq. 7 with
  the official BCN code's unbiased variance; the BCN+WS ImageNet checkpoints.
* ``'C'``: ``s = sqrt(var_biased + eps)``, eps 1e-6. BiT and timm's
  ``StdConv2d`` (BiT itself used eps 1e-8: pass ``eps=1e-8``). With
  ``eps=1e-5`` this is eq. 7 of the paper to the letter.

The backward pass is the paper's closed form (eq. 14-15): the incoming
gradient is projected onto the space orthogonal to ``1`` and ``W_hat`` and
scaled by ``1 / s``. It computes exactly the autograd gradient with one fused
pass less and none of autograd's intermediates kept alive.

Statistics are computed in float32 (or float64 for float64 weights), also for
half-precision weights or under autocast: in fp16 a filter with small spread
loses all its precision.
"""
from typing import NamedTuple, Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


class WSVariant(NamedTuple):
    """How the standard deviation of a filter is formed."""
    unbiased: bool      # divide the variance by I - 1 instead of I
    eps_in_sqrt: bool   # sqrt(var + eps) instead of sqrt(var) + eps
    eps: float          # the variant's default eps


WS_VARIANTS = {
    'A': WSVariant(unbiased=True, eps_in_sqrt=False, eps=1e-5),
    'B': WSVariant(unbiased=True, eps_in_sqrt=True, eps=1e-5),
    'C': WSVariant(unbiased=False, eps_in_sqrt=True, eps=1e-6),
}


def get_ws_variant(variant: str, eps: Optional[float] = None) -> WSVariant:
    """Look a variant up by name, optionally with its eps replaced.

    Raises ``ValueError`` with the valid choices for an unknown name or a
    negative eps, so layers can validate their config at construction.
    """
    if variant not in WS_VARIANTS:
        raise ValueError(
            f'unknown weight standardization variant {variant!r}; use one of '
            f'{sorted(WS_VARIANTS)} (A: mmcv ConvWS / official WS code, '
            f'B: official BCN code, C: BiT / timm StdConv2d)')
    spec = WS_VARIANTS[variant]
    if eps is None:
        return spec
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps < 0:
        raise ValueError(f'eps must be a float >= 0, got {eps!r}')
    return spec._replace(eps=float(eps))


class _StandardizeRows(torch.autograd.Function):
    """W_hat for a (filters, fan_in) matrix, with the backward of eq. 14-15.

    It runs on every training step of every conv, so it is written for speed:
    each line is one pass over the weight, few of them allocate, and no row
    reduction goes through ``var`` / ``mean``, which are several times slower
    than ``sum`` / ``vector_norm`` on CPU.
    """

    @staticmethod
    def forward(ctx, rows: Tensor, unbiased: bool, eps_in_sqrt: bool,
                eps: float) -> Tensor:
        w = rows.to(torch.promote_types(rows.dtype, torch.float32))
        fan_in = w.shape[1]
        ddof = fan_in - int(unbiased)
        centered = w - w.sum(1, keepdim=True).div_(fan_in)
        std = torch.linalg.vector_norm(centered, dim=1, keepdim=True)
        std.div_(ddof**0.5)
        if eps_in_sqrt:
            scale = std.square_().add_(eps).rsqrt_()
            # d s / d var = 1 / (2 s): the projection coefficient is exactly 1.
            proj_coef = None
        else:
            scale = (std + eps).reciprocal_()
            # s = std + eps, so d s / d var = 1 / (2 std) = (1 / 2s) * s / std.
            # Clamped: a constant filter has std 0 and W_hat 0, and 0 * big
            # stays 0 where autograd's 0 / 0 would give NaN.
            proj_coef = (std + eps).div_(std.clamp_min_(torch.finfo(w.dtype).tiny))
        w_hat = centered.mul_(scale)
        ctx.ddof = ddof
        ctx.save_for_backward(w_hat, scale, proj_coef)
        return w_hat.to(rows.dtype)

    @staticmethod
    @once_differentiable  # the closed form is not itself differentiated
    def backward(ctx, grad_w_hat: Tensor):
        w_hat, scale, proj_coef = ctx.saved_tensors
        g = grad_w_hat.to(w_hat.dtype)
        # eq. 14 removes the component along W_hat (the std's derivative),
        # eq. 15 the mean (the centering's derivative); mean(W_hat) is 0, so
        # the two fuse into grad = scale * (g - mean(g) - W_hat * along) with
        # along = <g, W_hat> / ddof (times s / std for variant A).
        grad = torch.mul(g, w_hat)
        along = grad.sum(1, keepdim=True).div_(ctx.ddof)
        if proj_coef is not None:
            along.mul_(proj_coef)
        offset = g.sum(1, keepdim=True).div_(-g.shape[1]).mul_(scale)
        torch.addcmul(offset, g, scale, out=grad)
        grad.addcmul_(w_hat, along.mul_(scale), value=-1)
        return grad.to(grad_w_hat.dtype), None, None, None


def weight_standardization(weight: Tensor, variant: str = 'A',
                           eps: Optional[float] = None) -> Tensor:
    """Standardize each output filter of a conv weight (paper eq. 5-7).

    Args:
        weight: conv weight ``(out_channels, in_channels / groups, *kernel)``;
            every slice ``weight[i]`` is one filter.
        variant: ``'A'``, ``'B'`` or ``'C'``, see the module docstring.
        eps: overrides the variant's eps.

    Returns:
        ``W_hat`` with the shape and dtype of ``weight``, differentiable.
    """
    spec = get_ws_variant(variant, eps)
    rows = weight.reshape(weight.shape[0], -1)
    return _StandardizeRows.apply(rows, spec.unbiased, spec.eps_in_sqrt,
                                  spec.eps).view_as(weight)
