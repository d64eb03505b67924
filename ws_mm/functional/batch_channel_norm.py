"""Batch-Channel Normalization (BCN) as pure functions.

Qiao et al., "Micro-Batch Training with Batch-Channel Normalization and
Weight Standardization", arXiv:1903.10520. BCN is a per-channel stage that
uses batch knowledge (batch statistics, or in the micro-batch setting running
estimates of them), followed by a group normalization of each sample with a
per-group affine. The modules in :mod:`ws_mm.layers.batch_channel_norm` hold
the parameters and the estimates.

Both stages together map each ``(sample, channel)`` row of the input by an
affine ``y = A[n, c] * x + B[n, c]``, and ``A`` and ``B`` depend on the input
only through the mean and variance of each row: the channel stage's batch
statistics are averages of them over the samples, and the group stage's
statistics of the channel stage's output are averages of their affine images
over each group's channels. So :func:`batch_channel_norm` costs what a group
norm costs: one pass over ``x`` for the row moments, a small computation over
``(N, C)``, one pass writing ``y``; its backward likewise, one pass reducing
``grad_out`` and ``grad_out * x`` per row and one writing the input gradient.
"""
from typing import Optional, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

Moments = Tuple[Tensor, Tensor]


def multi_rank() -> bool:
    """Whether a torch.distributed group of more than one rank is running."""
    return (dist.is_available() and dist.is_initialized()
            and dist.get_world_size() > 1)


def stats_dtype(x: Tensor) -> torch.dtype:
    """Statistics are kept in at least float32, so fp16/bf16 activations and
    autocast do not lose them; float64 stays float64."""
    return torch.promote_types(x.dtype, torch.float32)


def _rows(x: Tensor) -> Tensor:
    """``x`` of shape ``(N, C, *)`` as ``(N, C, L)``, L the product of ``*``."""
    return x.reshape(x.size(0), x.size(1), -1)


@torch.no_grad()
def sample_channel_moments(x: Tensor) -> Moments:
    """Mean and biased variance of each ``(sample, channel)`` row of ``x``,
    of shape ``(N, C)``, in :func:`stats_dtype`; no gradient is recorded.

    Two passes (the mean, then the norm of the centered values): exact, and
    on CPU several times faster than ``var_mean``.
    """
    rows = _rows(x).to(stats_dtype(x))
    mean = rows.sum(2).div_(rows.size(2))
    var = torch.linalg.vector_norm(rows - mean[..., None], dim=2)
    return mean, var.square_().div_(rows.size(2))


def pool_moments(mean: Tensor, var: Tensor) -> Moments:
    """Per-channel mean and biased variance over the samples of rows of equal
    size, from their ``(N, C)`` moments (the law of total variance)."""
    channel_mean = mean.mean(0)
    return channel_mean, var.mean(0) + (mean - channel_mean).square().mean(0)


@torch.no_grad()
def channel_stats(x: Tensor, moments: Optional[Moments] = None) -> Moments:
    """Per-channel mean and biased variance of ``x`` over every dim but dim 1.

    ``moments``: :func:`sample_channel_moments` of ``x``, if the caller has
    them. The result has shape ``(C,)`` and :func:`stats_dtype`; no gradient
    is recorded.

    When a ``torch.distributed`` process group with more than one rank is
    initialized, the statistics are those of the data of all ranks together:
    each rank's element count, sum and sum of squares (formed from its mean
    and variance, in float64) are summed with one ``all_reduce``, then
    ``mean = sum / count`` and ``var = max(sumsq / count - mean**2, 0)``.
    Ranks with different batch sizes are weighted by their element counts,
    and every rank gets bit-identical results. As with ``SyncBatchNorm``,
    every rank must make the call. A rank with an empty batch contributes
    nothing; if there are no elements at all the statistics are NaN. A NaN
    or Inf in any rank's statistics survives the sum, so the result is then
    not finite on every rank alike.
    """
    mean, var = pool_moments(*(moments or sample_channel_moments(x)))
    if not multi_rank():
        return mean, var

    count = x.numel() // x.size(1) if x.size(1) else 0
    mean64, var64 = mean.double(), var.double()
    if count == 0:  # the statistics of nothing are NaN; 0 * NaN would poison the sum
        mean64, var64 = torch.zeros_like(mean64), torch.zeros_like(var64)
    packed = torch.cat([
        mean64.new_tensor([count]), mean64 * count,
        (var64 + mean64 * mean64) * count
    ])
    dist.all_reduce(packed)
    total, sums, sumsqs = packed[0], *packed[1:].chunk(2)
    mean64 = sums / total
    var64 = (sumsqs / total - mean64 * mean64).clamp_(min=0)
    return mean64.to(mean.dtype), var64.to(mean.dtype)


def moving_average_rate(
        momentum: Optional[float],
        num_batches_tracked: Union[int, Tensor]) -> Union[float, Tensor]:
    """Rate of the running-estimate update number ``t = num_batches_tracked``.

    ``rate = max(momentum, 1 / (t + 1))``, used with BatchNorm's convention
    ``estimate = (1 - rate) * estimate + rate * batch_statistic``. So the
    first update copies the batch statistics (the estimates never start from
    mean 0 / variance 1), the next ones form the cumulative average of all
    batches seen, and once ``1 / (t + 1)`` falls below ``momentum`` (after
    ``1 / momentum - 1`` updates) it is an exponential moving average with
    constant rate ``momentum``. ``momentum=None`` is the cumulative average
    throughout, as with BatchNorm's ``momentum=None``.

    The official BCN code leaves this rate undefined (a buffer that starts
    at 0 and is never set, so its estimates never move); this schedule is
    ours. A tensor ``num_batches_tracked`` gives a 0-dim tensor rate on the
    same device, so the update needs no host-device synchronization.
    """
    rate = 1.0 / (num_batches_tracked + 1)
    if momentum is None:
        return rate
    if isinstance(rate, Tensor):
        return rate.clamp(min=momentum)
    return max(momentum, rate)


def group_norm_group_affine(x: Tensor, num_groups: int, group_weight: Tensor,
                            group_bias: Tensor, eps: float = 1e-5) -> Tensor:
    """Group normalization of each sample with a per-group affine.

    The second stage of BCN alone (arXiv:1903.10520; the official code's
    ``F.group_norm`` followed by a ``(1, G, 1)`` weight and bias), for a first
    stage that must run on its own (``nn.SyncBatchNorm``). ``x`` of shape
    ``(N, C, *)`` is viewed as ``(N, G, C // G * prod(*))``; each of the
    ``N * G`` groups is normalized with its own mean and biased variance,
    ``(x - mean) / sqrt(var + eps)``, then multiplied by ``group_weight[g]``
    and shifted by ``group_bias[g]``, both of shape ``(1, G, 1)``.
    """
    per_group = x.size(1) // num_groups
    weight = group_weight.reshape(num_groups).repeat_interleave(per_group)
    bias = group_bias.reshape(num_groups).repeat_interleave(per_group)
    return F.group_norm(x, num_groups, weight, bias, eps)


def _coefficients(moments: Moments, channel: Optional[Moments],
                  weight: Tensor, bias: Tensor, group_weight: Tensor,
                  group_bias: Tensor, num_groups: int,
                  eps: float) -> Tuple[Tensor, Tensor]:
    """``A`` and ``B`` of BCN's map ``y = A * x + B`` per ``(n, c)`` row, from
    the rows' moments, differentiably.

    The channel stage is ``a * x + b`` with ``a = weight / sqrt(var + eps)``,
    ``b = bias - mean * a``, ``(mean, var)`` being ``channel`` or, if that is
    ``None``, the batch's own statistics pooled from the rows. Its output's
    rows have mean ``a * m + b`` and variance ``a**2 * v``; a group's mean
    and variance are the average of those means and the average of those
    variances plus the variance of those means over the group's channels.
    """
    mean, var = moments
    n, c = mean.shape
    channel_mean, channel_var = channel or pool_moments(mean, var)
    a = weight * torch.rsqrt(channel_var + eps)
    b = bias - channel_mean * a
    row_mean = (a * mean + b).view(n, num_groups, -1)
    row_var = (a * a * var).view(n, num_groups, -1)
    group_mean = row_mean.mean(2, keepdim=True)
    group_var = (row_var.mean(2, keepdim=True) +
                 (row_mean - group_mean).square().mean(2, keepdim=True))
    scale = torch.rsqrt(group_var + eps) * group_weight.view(1, num_groups, 1)
    a_scaled = a.view(1, num_groups, -1) * scale
    shift = (b.view(1, num_groups, -1) - group_mean) * scale
    return (a_scaled.reshape(n, c),
            (shift + group_bias.view(1, num_groups, 1)).reshape(n, c))


def _per_row(coefficient: Tensor, x: Tensor) -> Tensor:
    """An ``(N, C)`` coefficient shaped to broadcast over ``x`` ``(N, C, *)``."""
    return coefficient.view(*coefficient.shape, *[1] * (x.dim() - 2))


def _apply(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``a * x + b`` with ``(N, C)`` coefficients, in ``x``'s dtype."""
    return torch.addcmul(_per_row(b, x), _per_row(a, x), x).to(x.dtype)


class _BatchChannelNorm(torch.autograd.Function):
    """BCN's output from the rows' moments; the backward reduces
    ``grad_out`` and ``grad_out * x`` per row and differentiates the small
    ``(N, C)`` graph of :func:`_coefficients` with those sums."""

    @staticmethod
    def forward(ctx, x, mean, var, channel_mean, channel_var, weight, bias,
                group_weight, group_bias, num_groups, eps):
        dtype = mean.dtype
        params = (weight, bias, group_weight, group_bias)
        # Leaves of the (N, C) graph: the moments stand for x in it.
        leaves = [mean.detach().requires_grad_(ctx.needs_input_grad[0]),
                  var.detach().requires_grad_(ctx.needs_input_grad[0])]
        leaves += [p.detach().to(dtype).requires_grad_(need)
                   for p, need in zip(params, ctx.needs_input_grad[5:9])]
        channel = None
        if channel_mean is not None:
            channel = (channel_mean.to(dtype), channel_var.to(dtype))
        with torch.enable_grad():
            a, b = _coefficients(leaves[:2], channel, *leaves[2:], num_groups,
                                 eps)
        ctx.save_for_backward(x, *params)
        ctx.graph = (a, b, leaves)
        ctx.channel, ctx.num_groups, ctx.eps = channel, num_groups, eps
        ctx.param_dtypes = [p.dtype for p in params]
        return _apply(x, a.detach(), b.detach())

    @staticmethod
    def backward(ctx, grad_out):
        # Unpacked once: non-reentrant checkpointing allows no second unpack.
        x, *params = ctx.saved_tensors
        if torch.is_grad_enabled():  # backward(create_graph=True)
            return _differentiable_backward(ctx, grad_out, x, params)
        a, b, leaves = ctx.graph
        rows, grad_rows = _rows(x), _rows(grad_out.to(a.dtype))
        sum_grad = grad_rows.sum(2)
        sum_grad_x = (grad_rows * rows).sum(2)
        wrt = [leaf for leaf in leaves if leaf.requires_grad]
        # The small graph is kept (retain_graph) for another backward
        # through the same output; ctx frees it.
        grads = iter(torch.autograd.grad((a, b), wrt, (sum_grad_x, sum_grad),
                                         retain_graph=True, allow_unused=True))
        grads = [next(grads) if leaf.requires_grad else None
                 for leaf in leaves]
        grad_x = None
        if ctx.needs_input_grad[0]:
            # d mean / dx = 1 / L, d var / dx = 2 (x - mean) / L per row.
            mean, length = leaves[0].detach(), rows.size(2)
            per_x = grads[1].mul(2 / length)
            offset = grads[0].div(length) - per_x * mean
            grad_x = torch.addcmul(_per_row(offset, x), _per_row(per_x, x), x)
            grad_x = grad_x.addcmul_(_per_row(a.detach(), x), grad_out)
            grad_x = grad_x.to(x.dtype)
        grad_params = [None if g is None else g.to(dtype)
                       for g, dtype in zip(grads[2:], ctx.param_dtypes)]
        return (grad_x, None, None, None, None, *grad_params, None, None)


def _differentiable_backward(ctx, grad_out, x, params):
    """The same gradients, recorded by autograd (the forward recomputed from
    differentiable moments), so that they can be differentiated again."""
    needs = ctx.needs_input_grad
    wrt = [t for t, need in zip((x, *params), needs[:1] + needs[5:9]) if need]
    rows = _rows(x).to(ctx.graph[0].dtype)
    var, mean = torch.var_mean(rows, dim=2, correction=0)
    a, b = _coefficients((mean, var), ctx.channel,
                         *(p.to(mean.dtype) for p in params), ctx.num_groups,
                         ctx.eps)
    out = _apply(x.to(mean.dtype), a, b).to(x.dtype)
    grads = iter(torch.autograd.grad(out, wrt, grad_out, create_graph=True))
    grad_x, *grad_params = [next(grads) if need else None
                            for need in needs[:1] + needs[5:9]]
    return (grad_x, None, None, None, None, *grad_params, None, None)


def batch_channel_norm(x: Tensor, weight: Tensor, bias: Tensor,
                       group_weight: Tensor, group_bias: Tensor,
                       num_groups: int, eps: float = 1e-5,
                       channel: Optional[Moments] = None,
                       moments: Optional[Moments] = None) -> Tensor:
    """Batch-Channel Normalization of ``x`` ``(N, C, *)`` in one pass.

    Equals ``group_norm_group_affine(channel_stage(x), ...)``, where the
    channel stage is ``(x - mean) / sqrt(var + eps) * weight + bias`` per
    channel with ``(mean, var) = channel`` (running estimates: constants),
    or, with ``channel=None``, with the batch's own per-channel mean and
    biased variance (differentiated, as BatchNorm's in training).

    Args:
        x: the input, ``(N, C, *)``.
        weight, bias: the channel stage's affine, ``(C,)``.
        group_weight, group_bias: the group stage's affine, ``(1, G, 1)``.
        num_groups: ``G``, which divides ``C``.
        eps: added to both stages' variances inside the square root.
        channel: the channel stage's ``(mean, var)``, ``(C,)``, or ``None``.
        moments: :func:`sample_channel_moments` of ``x``, if the caller
            already has them (to update running estimates from).

    Statistics and coefficients are computed in :func:`stats_dtype`; the
    output has ``x``'s dtype.
    """
    mean, var = moments or sample_channel_moments(x)
    channel_mean, channel_var = channel or (None, None)
    params = (weight, bias, group_weight, group_bias)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, *params)):
        return _BatchChannelNorm.apply(x, mean, var, channel_mean,
                                       channel_var, *params, num_groups, eps)
    dtype = mean.dtype
    if channel is not None:
        channel = (channel_mean.to(dtype), channel_var.to(dtype))
    a, b = _coefficients((mean, var), channel,
                         *(p.to(dtype) for p in params), num_groups, eps)
    return _apply(x, a, b)
