"""Weight Standardization as pure functions.

Qiao et al., "Micro-Batch Training with Batch-Channel Normalization and Weight
Standardization", arXiv:1903.10520, eq. 5-7. Each output filter ``W[i]`` of a
convolution is standardized over its fan-in (input channels x kernel):

    W_hat[i] = (W[i] - mean(W[i])) / s(W[i])

Public code disagrees on ``s``, visibly in the outputs, so the variant is a
parameter: :data:`WS_VARIANTS` (the table in docs/layers.md says which
code and checkpoints use which).

The backward pass is the paper's closed form (eq. 14-15): the incoming
gradient is projected onto the space orthogonal to ``1`` and ``W_hat`` and
scaled by ``1 / s``. It computes exactly the autograd gradient, with torch's
batch-norm backward kernel: filters as channels, with per-filter parameters
for which that kernel's formula is the closed form of every variant
(:func:`_standardize_rows_backward`).

Filters are the rows of a ``(filters, fan_in)`` matrix (:func:`filter_rows`);
the row functions prefixed ``_`` are shared with :mod:`.conv_ws`, which fuses
them with the convolution.

Statistics are computed in float32 (or float64 for float64 weights), also for
half-precision weights or under autocast: in fp16 a filter with small spread
loses all its precision.
"""
import threading
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .validate import non_negative


class WSVariant(NamedTuple):
    """How the standard deviation ``s`` of a filter is formed."""
    unbiased: bool      # divide the variance by I - 1 instead of I
    eps_in_sqrt: bool   # sqrt(var + eps) instead of sqrt(var) + eps
    eps: float          # the variant's default eps
    name: str = 'custom'

    def same_as(self, other: 'WSVariant') -> bool:
        """Whether both standardize alike, whatever their names."""
        return self[:3] == other[:3]


WS_VARIANTS = {
    name: WSVariant(unbiased, eps_in_sqrt, eps, name)
    for name, unbiased, eps_in_sqrt, eps in (('A', True, False, 1e-5),
                                             ('B', True, True, 1e-5),
                                             ('C', False, True, 1e-6))
}


def get_ws_variant(variant: Union[str, WSVariant] = 'A',
                   eps: Optional[float] = None) -> WSVariant:
    """A variant by name (or as given), optionally with its eps replaced.

    Raises ``ValueError`` with the valid choices for an unknown name or a
    negative eps, so layers can validate their config at construction.
    """
    if isinstance(variant, WSVariant):
        resolved = variant
    elif isinstance(variant, str) and variant in WS_VARIANTS:
        resolved = WS_VARIANTS[variant]
    else:
        raise ValueError(
            f'unknown weight standardization variant {variant!r}; use one of '
            f'{sorted(WS_VARIANTS)} or a WSVariant')
    if eps is None:
        return resolved
    return resolved._replace(
        eps=non_negative('weight standardization', 'eps', eps))


def filter_rows(weight: Tensor, transposed: bool = False,
                groups: int = 1) -> Tensor:
    """A conv weight as a ``(filters, fan_in)`` matrix, a row per output
    channel: the rows that WS standardizes.

    A conv stores ``(out, in / groups, *k)``: a view. A transposed conv
    stores ``(in, out / groups, *k)``; the filter of output channel ``o`` of
    group ``g`` is ``weight[g-th block of inputs, o]``: a copy.
    """
    if not transposed:
        return weight.reshape(weight.shape[0], -1)
    cin, cout_g = weight.shape[:2]
    grouped = weight.reshape(groups, cin // groups, cout_g, -1)
    return grouped.transpose(1, 2).reshape(groups * cout_g, -1)


def unfilter_rows(rows: Tensor, shape: Sequence[int], transposed: bool = False,
                  groups: int = 1) -> Tensor:
    """The inverse of :func:`filter_rows`: rows back in a weight's shape."""
    if not transposed:
        return rows.view(shape)
    cin, cout_g = shape[:2]
    grouped = rows.view(groups, cout_g, cin // groups, -1)
    return grouped.transpose(1, 2).reshape(shape)


class _RowStats(NamedTuple):
    """Per-filter statistics of a standardization, enough to recompute W_hat
    (:func:`_restandardize_rows`) and to differentiate it
    (:func:`_standardize_rows_backward`)."""
    mean: Tensor   # (filters, 1)
    scale: Tensor  # 1 / s, (filters, 1)
    root: Tensor   # sqrt(var + eps_in_sqrt), the derivative of s needs it
    divisor: int   # of the variance: fan_in - 1 (unbiased) or fan_in


def _standardize_rows(rows: Tensor, variant: WSVariant,
                      out: Optional[Tensor] = None) -> Tuple[Tensor, _RowStats]:
    """``W_hat`` of a ``(filters, fan_in)`` matrix and its statistics, no
    autograd. ``W_hat`` is in the statistics' dtype (float32 or float64),
    written into ``out`` if given (see :func:`_workspace`).

    In-place eager ops: on CPU, row reductions through ``var`` / ``mean``
    are several times slower than ``sum`` / ``vector_norm``, and batch
    norm's training forward is slower too (its statistics are scalar loops).
    """
    w = rows.to(torch.promote_types(rows.dtype, torch.float32))
    divisor = w.shape[1] - int(variant.unbiased)
    eps_in, eps_after = ((variant.eps, 0.0) if variant.eps_in_sqrt else
                         (0.0, variant.eps))
    mean = w.sum(1, keepdim=True).div_(w.shape[1])
    centered = torch.sub(w, mean, out=out)
    root = torch.linalg.vector_norm(centered, dim=1, keepdim=True)
    root = root.square_().div_(divisor).add_(eps_in).sqrt_()
    scale = (root + eps_after).reciprocal_()
    return centered.mul_(scale), _RowStats(mean, scale, root, divisor)


def _restandardize_rows(rows: Tensor, stats: _RowStats,
                        out: Optional[Tensor] = None) -> Tensor:
    """``W_hat`` again from saved statistics, without the reductions;
    bit-equal to :func:`_standardize_rows`' (the same ops)."""
    w = rows.to(stats.mean.dtype)
    return torch.sub(w, stats.mean, out=out).mul_(stats.scale)


_WORKSPACES = threading.local()


def _workspace(rows: Tensor) -> Optional[Tensor]:
    """A buffer for a transient W_hat of ``rows``' size (in the statistics'
    dtype) on CPU; ``None`` (allocate as usual) elsewhere.

    A fresh weight-sized tensor on CPU comes from the OS in new pages, and
    faulting them in costs more than all of WS's arithmetic. One buffer per
    thread and dtype, as large as the largest weight seen, serves every WS
    layer in turn: it holds the forward's W_hat until its convolution
    returns, the backward's until the convolution's backward returns.
    """
    if rows.device.type != 'cpu':  # CUDA's caching allocator reuses memory
        return None
    dtype = torch.promote_types(rows.dtype, torch.float32)
    buffers = _WORKSPACES.__dict__.setdefault('buffers', {})
    buffer = buffers.get(dtype)
    if buffer is None or buffer.numel() < rows.numel():
        buffer = buffers[dtype] = torch.empty(rows.numel(), dtype=dtype)
    return buffer[:rows.numel()].view(rows.shape)


def _standardize_rows_backward(grad_w_hat: Tensor, rows: Tensor,
                               stats: _RowStats) -> Tensor:
    """The gradient w.r.t. W of the paper's eq. 14-15, from W itself.

    eq. 14 removes the component along W_hat (the derivative of s), eq. 15
    the mean (the centering's); mean(W_hat) is 0, so the two fuse into

        scale * (g - mean(g) - (W - mean) * <g, W - mean> * k),
        k = scale / (d * root)

    (d the divisor; root = s when eps is inside the sqrt). torch's
    batch-norm backward in training mode, of ``W`` as ``(1, filters,
    fan_in)`` with per-filter ``mean``, ``invstd`` and ``weight``, is

        weight * invstd * (g - mean(g) - (W - mean) * <g, W - mean> * k),
        k = invstd**2 / fan_in,

    the same for ``invstd**2 = fan_in * scale / (d * root)`` and
    ``weight = scale / invstd``: one kernel, two passes over g and W. A
    constant filter (root 0, W - mean 0) gets ``scale * (g - mean(g))``, the
    limit, where autograd's 0 / 0 gives NaN: root is clamped so that invstd
    stays finite and the projection is 0 * finite. The result is in the
    statistics' dtype.
    """
    dtype = stats.mean.dtype
    tiny = torch.finfo(dtype).tiny
    # rsqrt(root) and sqrt(scale) apart: their product is finite for a
    # clamped root, where scale / root would overflow
    invstd = stats.root.clamp_min(tiny).rsqrt_().mul_(
        stats.scale.mul(rows.shape[1] / stats.divisor).sqrt_())
    weight = stats.scale / invstd
    grad, _, _ = torch.ops.aten.native_batch_norm_backward(
        grad_w_hat.to(dtype)[None], rows.to(dtype)[None], weight.flatten(),
        None, None, stats.mean.flatten(), invstd.flatten(), True, 0.0,
        [True, False, False])
    return grad[0]


class _StandardizeRows(torch.autograd.Function):
    """W_hat with the closed-form backward; keeps no copy of W_hat (only W
    and the per-filter statistics, from which the backward works)."""

    @staticmethod
    def forward(ctx, rows: Tensor, variant: WSVariant) -> Tensor:
        w_hat, stats = _standardize_rows(rows, variant)
        ctx.save_for_backward(rows, stats.mean, stats.scale, stats.root)
        ctx.divisor = stats.divisor
        return w_hat.to(rows.dtype)

    @staticmethod
    @once_differentiable  # the closed form is not itself differentiated
    def backward(ctx, grad_w_hat: Tensor):
        rows, mean, scale, root = ctx.saved_tensors
        grad = _standardize_rows_backward(
            grad_w_hat, rows, _RowStats(mean, scale, root, ctx.divisor))
        return grad.to(grad_w_hat.dtype), None


def weight_standardization(weight: Tensor,
                           variant: Union[str, WSVariant] = 'A',
                           eps: Optional[float] = None, *,
                           transposed: bool = False,
                           groups: int = 1) -> Tensor:
    """Standardize each output filter of a conv weight (paper eq. 5-7).

    Args:
        weight: conv weight ``(out_channels, in_channels / groups, *kernel)``,
            or with ``transposed=True`` a transposed conv's
            ``(in_channels, out_channels / groups, *kernel)``.
        variant: ``'A'``, ``'B'``, ``'C'`` (:data:`WS_VARIANTS`) or a
            :class:`WSVariant`.
        eps: overrides the variant's eps.
        transposed, groups: the conv's, for the filter layout
            (:func:`filter_rows`).

    Returns:
        ``W_hat`` with the shape and dtype of ``weight``, differentiable.
    """
    rows = filter_rows(weight, transposed, groups)
    w_hat = _StandardizeRows.apply(rows, get_ws_variant(variant, eps))
    return unfilter_rows(w_hat, weight.shape, transposed, groups)
