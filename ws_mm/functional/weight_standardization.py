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
scaled by ``1 / s``. It computes exactly the autograd gradient, as one fused
kernel (:mod:`.fusion`). The row-level pieces (:func:`standardize_rows`,
:func:`restandardize_rows`, :func:`standardize_rows_backward`) are exposed
for ``ws_mm.layers``' WS convs, which fuse them with the convolution.

Statistics are computed in float32 (or float64 for float64 weights), also for
half-precision weights or under autocast: in fp16 a filter with small spread
loses all its precision.
"""
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .fusion import fused


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


class RowStats(NamedTuple):
    """Per-filter statistics of a standardization, enough to recompute W_hat
    (:func:`restandardize_rows`) and to differentiate it
    (:func:`standardize_rows_backward`): ``(filters, 1)`` float tensors and
    the variance's divisor."""
    mean: Tensor
    scale: Tensor  # 1 / s
    root: Tensor   # sqrt(var + eps_in_sqrt), the derivative of s needs it
    ddof: int


def standardize_rows(rows: Tensor,
                     spec: WSVariant) -> Tuple[Tensor, RowStats]:
    """``W_hat`` of a ``(filters, fan_in)`` matrix and its statistics, no
    autograd. ``W_hat`` is in the statistics' dtype (float32 or float64).

    Written in the in-place style that is fastest eagerly (no row reduction
    through var / mean, several times slower than sum / vector_norm on CPU);
    a compiled version measured 0.85x-1.49x this one, so it stays eager
    (``benchmark_speed.py --only kernel``).
    """
    w = rows.to(torch.promote_types(rows.dtype, torch.float32))
    ddof = w.shape[1] - int(spec.unbiased)
    eps_in, eps_after = (spec.eps, 0.0) if spec.eps_in_sqrt else (0.0, spec.eps)
    mean = w.sum(1, keepdim=True).div_(w.shape[1])
    centered = w - mean
    root = torch.linalg.vector_norm(centered, dim=1, keepdim=True)
    root = root.square_().div_(ddof).add_(eps_in).sqrt_()
    scale = (root + eps_after).reciprocal_()
    return centered.mul_(scale), RowStats(mean, scale, root, ddof)


def restandardize_rows(rows: Tensor, stats: RowStats) -> Tensor:
    """``W_hat`` again from saved statistics, without the reductions.

    Bit-equal to :func:`standardize_rows`' result: the same eager ops,
    ``(w - mean) * scale``. (Compiled, this one pass measured no faster at
    small weights, where the compiled call's own overhead dominates.)
    """
    w = rows.to(stats.mean.dtype)
    return (w - stats.mean).mul_(stats.scale)


@fused
def _standardize_rows_backward(grad_w_hat: Tensor, w_hat: Tensor,
                               scale: Tensor, root: Tensor, ddof: int):
    g = grad_w_hat
    root_over_s = root.clamp_min(torch.finfo(w_hat.dtype).tiny) * scale
    along = (g * w_hat).sum(1, keepdim=True).div_(ddof).div_(root_over_s)
    offset = g.sum(1, keepdim=True).div_(-g.shape[1]).mul_(scale)
    # scale * g + offset - (scale * along) * w_hat, in place of w_hat
    return w_hat.mul_(along.mul_(scale).neg_()).add_(offset).addcmul_(g, scale)


def standardize_rows_backward(grad_w_hat: Tensor, w_hat: Tensor,
                              stats: RowStats) -> Tensor:
    """The gradient w.r.t. W of the paper's eq. 14-15, written over ``w_hat``.

    eq. 14 removes the component along W_hat (the derivative of s), eq. 15
    the mean (the centering's); mean(W_hat) is 0, so the two fuse into
    ``scale * (g - mean(g) - W_hat * <g, W_hat> / ddof * s / root)``, one
    compiled kernel (see :mod:`.fusion` for what that gains). ``s / root``
    is 1 when eps is inside the sqrt; root is clamped so that a constant
    filter (W_hat 0) gives 0 where autograd's 0 / 0 gives NaN. ``w_hat``
    (from :func:`restandardize_rows`) is overwritten: it is the result, in
    the statistics' dtype.
    """
    return _standardize_rows_backward(grad_w_hat.to(w_hat.dtype), w_hat,
                                      stats.scale, stats.root, stats.ddof)


class _StandardizeRows(torch.autograd.Function):
    """W_hat with the closed-form backward; keeps no copy of W_hat.

    Only W and the per-filter statistics are saved; the backward recomputes
    W_hat from them.
    """

    @staticmethod
    def forward(ctx, rows: Tensor, spec: WSVariant) -> Tensor:
        w_hat, stats = standardize_rows(rows, spec)
        ctx.save_for_backward(rows, stats.mean, stats.scale, stats.root)
        ctx.ddof = stats.ddof
        return w_hat.to(rows.dtype)

    @staticmethod
    @once_differentiable  # the closed form is not itself differentiated
    def backward(ctx, grad_w_hat: Tensor):
        rows, mean, scale, root = ctx.saved_tensors
        stats = RowStats(mean, scale, root, ctx.ddof)
        grad = standardize_rows_backward(grad_w_hat,
                                         restandardize_rows(rows, stats), stats)
        return grad.to(grad_w_hat.dtype), None


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
    return _StandardizeRows.apply(rows, spec).view_as(weight)
