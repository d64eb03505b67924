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
over each group's channels. So :func:`batch_channel_norm` is one
normalization: one pass gives the rows' moments, a small computation over
``(N, C)`` gives the map, and one pass writes ``y``. Its backward is group
norm's backward in the channel stage's output followed by the channel
stage's own, both from per-row sums of ``grad_out`` and ``grad_out * x``
(one pass) and the row moments; one more pass writes the input gradient.
On CPU all of it is compiled (:mod:`ws_mm.functional.bcn_kernels`): a
group's block of the input (its channels, every sample) holds all the
statistics its rows need, the channel stage's included, so the forward and
the backward each read a block from memory once and re-read it in cache, as
group norm's kernel does; with the estimates' update, they form one
autograd function in C++. Elsewhere the passes are torch's kernels.
"""
import functools
from typing import Callable, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from . import bcn_kernels
from .bcn_kernels import TorchKernels

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
    """``x`` of shape ``(N, C, *)`` as contiguous ``(N * C, L)`` rows in
    :func:`stats_dtype`, L the product of ``*`` (a copy if ``x`` is laid
    out otherwise, channels_last say, or of another dtype)."""
    return x.reshape(x.size(0) * x.size(1), -1).contiguous().to(
        stats_dtype(x))


@torch.no_grad()
def sample_channel_moments(x: Tensor) -> Moments:
    """Mean and biased variance of each ``(sample, channel)`` row of ``x``,
    of shape ``(N, C)``, in :func:`stats_dtype`; no gradient is recorded."""
    rows = _rows(x)
    passes = bcn_kernels.compiled_for(rows) or TorchKernels
    mean, var = passes.row_moments(rows)
    return mean.view(x.shape[:2]), var.view(x.shape[:2])


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


class _Coefficients(NamedTuple):
    """The terms of BCN's map ``y = A * x + B`` per ``(n, c)`` row, shaped
    ``(1 or N, G, C // G)``: ``A = scale * group_scale``, ``B = (shift -
    group_mean) * group_scale + group_bias``."""
    rstd: Tensor         # 1 / sqrt(var + eps) of the channel stage
    scale: Tensor        # the channel stage is scale * x + shift
    shift: Tensor
    mean: Tensor         # the channel stage's statistic
    group_mean: Tensor   # of the channel stage's output, (N, G, 1)
    centered: Tensor     # its rows' means minus their group's
    group_rstd: Tensor   # 1 / sqrt(group var + eps), (N, G, 1)
    group_scale: Tensor  # group_rstd * group_weight, (N, G, 1)


def _coefficients(moments: Moments, channel: Moments, weight: Tensor,
                  bias: Tensor, group_weight: Tensor,
                  eps: float) -> _Coefficients:
    """BCN's map per ``(n, c)`` row from the rows' moments.

    The channel stage is ``scale * x + shift`` with ``scale = weight /
    sqrt(var + eps)``, ``shift = bias - mean * scale``, ``(mean, var) =
    channel``. Its output's rows have mean ``scale * m + shift`` and variance
    ``scale**2 * v``; a group's mean and variance are the average of those
    means and the average of those variances plus the variance of those
    means over the group's channels.
    """
    row_mean, row_var = moments
    n, g = row_mean.size(0), group_weight.numel()
    mean, var = channel
    rstd = torch.rsqrt(var + eps).view(1, g, -1)
    scale = weight.view(1, g, -1) * rstd
    mean = mean.view(1, g, -1)
    shift = bias.view(1, g, -1) - mean * scale
    stage_mean = torch.addcmul(shift, scale, row_mean.view(n, g, -1))
    group_mean = stage_mean.mean(2, keepdim=True)
    centered = stage_mean - group_mean
    group_var = torch.addcmul(centered.square(), scale.square(),
                              row_var.view(n, g, -1)).mean(2, keepdim=True)
    group_rstd = torch.rsqrt(group_var + eps)
    return _Coefficients(rstd, scale, shift, mean, group_mean, centered,
                         group_rstd, group_rstd * group_weight.view(1, g, 1))


def _map(co: _Coefficients, group_bias: Tensor) -> Tuple[Tensor, Tensor]:
    """``A`` and ``B``, ``(N, C)``."""
    a = co.scale * co.group_scale
    b = torch.addcmul(group_bias.view(1, -1, 1), co.shift - co.group_mean,
                      co.group_scale)
    return a.flatten(1), b.flatten(1)


class Estimates(NamedTuple):
    """Running estimates of the channel statistics, updated in place from
    each batch before it is normalized (BCN's estimate mode).

    :func:`update_estimates` says how, at ``rate`` (``None``: the first
    update). ``counted(kept)`` is then called, ``kept`` whether the batch
    updated them (``False``: its statistics were not finite, and it was
    normalized with the estimates unchanged)."""
    mean: Tensor
    var: Tensor
    rate: Optional[float]
    counted: Callable[[bool], None]


Channel = Union[None, Moments, Estimates]
# called with the batch's per-channel mean and biased variance
Observer = Callable[[Tensor, Tensor], None]


@torch.no_grad()
def update_estimates(mean: Tensor, var: Tensor, rate: Optional[float],
                     batch_mean: Tensor, batch_var: Tensor) -> bool:
    """Move the estimates ``mean`` and ``var`` in place toward a batch's
    per-channel mean and biased variance (:func:`channel_stats`) by
    ``rate`` (:func:`moving_average_rate`), or with ``rate=None`` (the first
    update) replace them; ``False``, and nothing changed, if the batch's
    statistics are not finite.

    As the official code, the variance moves toward the batch's second
    moment around the estimated mean, ``E[(x - mean)^2] = var + (batch_mean
    - mean)^2``: it keeps the batch-to-batch spread, without which a
    micro-batch (one value per channel, as in ASPP's image pooling at one
    image) would drive the estimate to 0. The first update has no estimated
    mean yet: it takes the batch's own statistics. The compiled kernel
    (``bcn_kernels.cpp``) computes the same in the pass that normalizes."""
    batch_mean, batch_var = batch_mean.to(mean.dtype), batch_var.to(mean.dtype)
    if rate is not None:
        deviation = batch_mean - mean
        batch_var = torch.addcmul(batch_var, deviation, deviation)
    if not torch.cat((batch_mean, batch_var)).isfinite().all():
        return False
    if rate is None:  # a copy, not a lerp: NaN estimates are replaced
        mean.copy_(batch_mean)
        var.copy_(batch_var)
    else:
        mean.lerp_(batch_mean, rate)
        var.lerp_(batch_var, rate)
    return True


def _forward(x: Tensor, params: Sequence[Tensor], channel: Optional[Moments],
             eps: float, observe: Optional[Observer],
             moments: Optional[Moments] = None):
    """BCN's output (of ``x``'s shape and dtype) with torch's kernels, the
    rows' moments (``moments``: if computed already) and the channel
    statistics it normalized with."""
    rows = _rows(x)
    n, c = x.shape[:2]
    dtype = rows.dtype
    if moments is None:
        moments = tuple(t.view(n, c) for t in TorchKernels.row_moments(rows))
    batch = pool_moments(*moments)
    # copies: running statistics may be updated in place before backward
    channel = (tuple(t.to(dtype, copy=True) for t in channel) if channel
               else batch)
    weight, bias, group_weight, group_bias = (p.to(dtype).reshape(-1)
                                              for p in params)
    co = _coefficients(moments, channel, weight, bias, group_weight, eps)
    # A * x + B = A * (x - row mean) + (A * row mean + B), and the latter
    # is group_scale * centered + group_bias.
    a = co.scale * co.group_scale
    b = torch.addcmul(group_bias.view(1, -1, 1), co.group_scale, co.centered)
    out = TorchKernels.row_affine(rows, moments[0].reshape(-1), a.reshape(-1),
                                  b.reshape(-1), x.shape)
    if observe:
        observe(*batch)
    return out.to(x.dtype), moments, channel


def _backward(grad: Tensor, x: Tensor, moments: Moments, channel: Moments,
              params: Sequence[Tensor], eps: float, batch_statistics: bool,
              input_grad: bool):
    """The gradients w.r.t. ``x`` (if ``input_grad``) and the four affines,
    each of its parameter's shape and dtype.

    With ``z = scale * x + shift`` the channel stage's output, BCN is a
    group norm of ``z``, so its backward is group norm's backward in ``z``
    followed by the channel stage's: a per-channel affine's, or with batch
    statistics batch norm's. Each needs only the rows' sums of ``grad`` and
    ``grad * x`` and their moments, so the input gradient is one pass.
    """
    # Rows once: a gradient that is not contiguous (that of a sum is an
    # expanded scalar) would be copied by each pass.
    rows, grad = _rows(x), _rows(grad)
    n = x.size(0)
    weight, bias, group_weight = (p.to(rows.dtype).reshape(-1)
                                  for p in params[:3])
    co = _coefficients(moments, channel, weight, bias, group_weight, eps)
    length = rows.size(1)
    g = group_weight.numel()
    row_mean, row_var = (t.view(n, g, -1) for t in moments)
    sum_grad, sum_grad_xc = (t.view(n, g, -1) for t in TorchKernels.row_sums(
        grad, rows, moments[0].reshape(-1)))
    # z = scale * (x - mean) + channel_bias, mean the channel statistic:
    # per row, sum(grad * (x - mean)), and z's mean.
    delta = row_mean - co.mean
    channel_bias = co.shift + co.mean * co.scale
    sum_grad_xm = torch.addcmul(sum_grad_xc, delta, sum_grad)
    stage_mean = torch.addcmul(channel_bias, co.scale, delta)
    # Group norm of z: grad_z = group_scale * grad + b * z + const per
    # group of D elements, from the group's sums of grad and grad * z.
    group_sum = sum_grad.sum(2, keepdim=True)
    group_sum_zc = torch.addcmul(channel_bias * sum_grad, co.scale,
                                 sum_grad_xm).sum(2, keepdim=True)
    group_sum_zc -= co.group_mean * group_sum  # sum(grad * (z - group mean))
    grad_group_bias = group_sum.sum(0)
    grad_group_weight = (group_sum_zc * co.group_rstd).sum(0)
    size = length * sum_grad.size(2)
    b = group_sum_zc * (co.group_rstd.square() * co.group_scale / -size)
    const = b * -co.group_mean - co.group_scale * group_sum / size
    # Row sums of grad_z and grad_z * (x - mean), summed over the samples:
    # the channel affine's gradients.
    row_grad_z = co.group_scale * sum_grad + (b * stage_mean + const) * length
    row_grad_zx = (co.group_scale * sum_grad_xm + length * (
        b * (co.scale * (row_var + delta.square()) + channel_bias * delta)
        + const * delta))
    grad_shift = row_grad_z.sum(0, keepdim=True)
    grad_weight = co.rstd * row_grad_zx.sum(0, keepdim=True)
    grad_params = [grad.view(p.shape).to(p.dtype) for grad, p in zip(
        (grad_weight, grad_shift, grad_group_weight, grad_group_bias),
        params)]
    if not input_grad:
        return None, grad_params
    # grad_x = scale * grad_z, less with batch statistics batch norm's
    # mean(grad_z) and x_hat * mean(grad_z * x_hat) over the channel: per
    # row, a * grad + p * (x - row mean) + q.
    p, q = b * co.scale, b * stage_mean + const
    if batch_statistics:
        count = n * length
        k = co.rstd * grad_weight / count  # mean(grad_z * x_hat) * rstd
        p = p - k
        q = q - grad_shift / count - k * delta
    a = co.scale * co.group_scale
    grad_x = TorchKernels.grad_rows(
        grad, rows, moments[0].reshape(-1), a.reshape(-1),
        (p * co.scale).reshape(-1), (q * co.scale).reshape(-1))
    return grad_x.to(x.dtype).view(x.shape), grad_params


class _BatchChannelNorm(torch.autograd.Function):
    """:func:`_forward`, with the backward of :func:`_backward`. The output
    is made in ``x``'s shape, not viewed: an in-place op on a view of it (a
    ReLU) would copy the whole gradient in the backward, and on a view made
    here would be refused. The compiled kernels' function is the same in
    C++ (``bcn_kernels.cpp``)."""

    @staticmethod
    def forward(ctx, x, weight, bias, group_weight, group_bias, channel, eps,
                observe, moments):
        params = (weight, bias, group_weight, group_bias)
        out, moments, used = _forward(x, params, channel, eps, observe,
                                      moments)
        ctx.save_for_backward(x, *moments, *used, *params)
        ctx.batch_statistics, ctx.eps = channel is None, eps
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # Unpacked once: non-reentrant checkpointing allows no second unpack.
        x, row_mean, row_var, mean, var, *params = ctx.saved_tensors
        channel = None if ctx.batch_statistics else (mean, var)
        needs = ctx.needs_input_grad[:5]
        if torch.is_grad_enabled():  # backward(create_graph=True)
            grads = _differentiable_backward(grad_out, x, params, channel,
                                             ctx.eps, needs)
        else:
            grad_x, grad_params = _backward(
                grad_out.reshape(x.shape), x, (row_mean, row_var),
                (mean, var), params, ctx.eps, ctx.batch_statistics, needs[0])
            grads = [g if need else None
                     for g, need in zip((grad_x, *grad_params), needs)]
        return (*grads, None, None, None, None)


def _differentiable_backward(grad_out, x, params, channel, eps, needs):
    """The gradients w.r.t. ``x`` and the four affines where ``needs`` says,
    recorded by autograd (the forward recomputed from differentiable
    moments), so that they can be differentiated again."""
    rows = _rows(x).view(*x.shape[:2], -1)
    row_var, row_mean = torch.var_mean(rows, dim=2, correction=0)
    weight, bias, group_weight, group_bias = (p.to(row_mean.dtype)
                                              for p in params)
    moments = (row_mean, row_var)
    a, b = _map(_coefficients(moments, channel or pool_moments(*moments),
                              weight, bias, group_weight, eps), group_bias)
    out = torch.addcmul(b[..., None], a[..., None], rows).to(x.dtype)
    wrt = [t for t, need in zip((x, *params), needs) if need]
    grads = iter(torch.autograd.grad(out, wrt, grad_out.reshape_as(out),
                                     create_graph=True))
    return [next(grads) if need else None for need in needs]


@functools.lru_cache(maxsize=None)
def _function(compiled):
    """The compiled kernels' autograd function, told how to differentiate
    its backward (in Python: only ``backward(create_graph=True)`` needs it)."""
    compiled.set_differentiable_backward(_differentiable_backward)
    return compiled.bcn


def batch_channel_norm(x: Tensor, weight: Tensor, bias: Tensor,
                       group_weight: Tensor, group_bias: Tensor,
                       eps: float = 1e-5, channel: Channel = None,
                       observe: Optional[Observer] = None) -> Tensor:
    """Batch-Channel Normalization of ``x`` ``(N, C, *)`` as one map.

    Equals ``group_norm_group_affine(channel_stage(x), ...)``, where the
    channel stage is ``(x - mean) / sqrt(var + eps) * weight + bias`` per
    channel with ``(mean, var)`` given by ``channel`` (running estimates:
    constants), or with the batch's own per-channel mean and biased
    variance (differentiated, as BatchNorm's in training).

    Args:
        x: the input, ``(N, C, *)``.
        weight, bias: the channel stage's affine, ``(C,)``.
        group_weight, group_bias: the group stage's affine, ``(1, G, 1)``;
            ``G`` divides ``C``.
        eps: added to both stages' variances inside the square root.
        channel: the channel stage's ``(mean, var)``, each ``(C,)``;
            ``None`` for the batch's own; or :class:`Estimates`, updated
            in place from the batch first.
        observe: called with the batch's per-channel mean and biased
            variance once computed (a BatchNorm stage's running update).

    Statistics and coefficients are computed in :func:`stats_dtype`; the
    output has ``x``'s dtype.
    """
    params = (weight, bias, group_weight, group_bias)
    compiled = bcn_kernels.compiled_for(x)
    batch = channel is None
    moments = None
    if isinstance(channel, Estimates):
        if compiled and not multi_rank():  # the update inside the kernel
            out, _, _, kept = _function(compiled)(
                x, *params, channel.mean, channel.var, channel.rate, True,
                False, eps)
            channel.counted(kept)
            return out
        if not compiled:
            moments = sample_channel_moments(x)
        channel.counted(update_estimates(
            channel.mean, channel.var, channel.rate,
            *channel_stats(x, moments)))
        channel = channel[:2]
    if compiled:
        out, batch_mean, batch_var, _ = _function(compiled)(
            x, *params, *(channel or (None, None)), None, False, batch, eps)
        if observe:
            observe(batch_mean, batch_var)
    elif torch.is_grad_enabled() and any(t.requires_grad
                                         for t in (x, *params)):
        out = _BatchChannelNorm.apply(x, *params, channel, eps, observe,
                                      moments)
    else:
        out = _forward(x, params, channel, eps, observe, moments)[0]
    return out
