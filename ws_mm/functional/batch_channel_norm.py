"""Batch-Channel Normalization (BCN) as pure functions.

Qiao et al., "Micro-Batch Training with Batch-Channel Normalization and
Weight Standardization", arXiv:1903.10520. BCN is a per-channel stage that
uses batch knowledge (batch statistics, or in the micro-batch setting running
estimates of them), followed by a group normalization of each sample with a
per-group affine. The three pieces here are the arithmetic of
those stages; the modules in :mod:`ws_mm.layers.batch_channel_norm` hold the
parameters and the estimates.
"""
from typing import Optional, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor


def multi_rank() -> bool:
    """Whether a torch.distributed group of more than one rank is running."""
    return (dist.is_available() and dist.is_initialized()
            and dist.get_world_size() > 1)


@torch.no_grad()
def channel_stats(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance of ``x`` over every dim but dim 1.

    Statistics are computed in at least float32 (float64 input stays
    float64), so fp16/bf16 activations and autocast do not lose them; the
    result has that dtype and shape ``(C,)``. No gradient is recorded.

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
    dtype = torch.promote_types(x.dtype, torch.float32)
    # Two passes (mean, then the norm of the centered values) over the
    # (N, C, L) view: exact, and on CPU ~8x faster than var_mean over dims
    # (0, 2, ...), whose reduction strides across the batch.
    rows = x.to(dtype)
    rows = rows.flatten(2) if rows.dim() > 2 else rows.unsqueeze(2)
    count = rows.size(0) * rows.size(2)
    mean = rows.sum(2).sum(0).div_(count)
    var = torch.linalg.vector_norm(rows - mean[:, None], dim=2).square_()
    var = var.sum(0).div_(count)
    if not multi_rank():
        return mean, var

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
    return mean64.to(dtype), var64.to(dtype)


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

    The channel stage of BCN (arXiv:1903.10520; the official code's
    ``F.group_norm`` followed by a ``(1, G, 1)`` weight and bias). ``x`` of
    shape ``(N, C, *)`` is viewed as ``(N, G, C // G * prod(*))``; each of
    the ``N * G`` groups is normalized with its own mean and biased variance,
    ``(x - mean) / sqrt(var + eps)``, then multiplied by ``group_weight[g]``
    and shifted by ``group_bias[g]``, both of shape ``(1, G, 1)``.

    A per-group affine equals a per-channel affine whose values repeat over
    the ``C // G`` channels of each group, so this is one fused
    ``F.group_norm`` call; autograd sums the channel gradients back into the
    ``(1, G, 1)`` parameters through ``repeat_interleave``.
    """
    per_group = x.size(1) // num_groups
    weight = group_weight.reshape(num_groups).repeat_interleave(per_group)
    bias = group_bias.reshape(num_groups).repeat_interleave(per_group)
    return F.group_norm(x, num_groups, weight, bias, eps)
