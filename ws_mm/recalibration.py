"""Recalibrating normalization statistics (torch only).

The running statistics a model ends training with are moving averages over
batches seen with older weights, and in micro-batch training BCN's estimates
average tiny batches. :func:`recalibrate_norm_statistics` replaces them by the
plain average over N batches of the model as it is (PreciseBN; Wu and Johnson,
arXiv:2105.07576). In an mmengine run, ``NormRecalibrationHook``
(:mod:`ws_mm.toolbox.recalibration`) calls it.
"""
import itertools
from typing import Any, Callable, Iterable, List, NamedTuple, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .functional.batch_channel_norm import multi_rank
from .layers.batch_channel_norm import EstimatedBatchNorm


class Recalibration(NamedTuple):
    batches: int        # batches forwarded (on this rank)
    layers: List[str]   # the layers recalibrated (those a batch reached)


def recalibrate_norm_statistics(
        model: nn.Module, batches: Iterable,
        forward: Optional[Callable[[Any], Any]] = None) -> Recalibration:
    """Re-estimate the running statistics of ``model`` over ``batches``.

    The layers are those that ``model.train()`` puts in training mode (so
    BatchNorms frozen by ``norm_eval=True`` keep theirs): every
    ``_BatchNorm`` that tracks running statistics (BN, SyncBN, BCN's
    ``mode='batch'`` stage) and every BCN estimate stage
    (:class:`EstimatedBatchNorm`). Each is reset and, with ``momentum=None``,
    ends with the average of the statistics of each batch it saw: for a BN
    the batch mean and the unbiased batch variance, as BatchNorm keeps them;
    for an estimate stage its own update (mean, and second moment around
    the estimate so far) with rate ``1 / t``. ``forward(batch)`` (default:
    ``model(batch)``) runs under ``torch.no_grad()``: nothing else changes,
    no gradient, no optimizer. Afterwards each module's training flag and
    each layer's momentum are what they were.

    Under ``torch.distributed`` a BN's statistics are averaged over the
    batches of all ranks (estimate stages average across ranks in every
    update already); every rank must pass the same number of batches. A
    layer that no batch reached keeps its statistics.

    Returns the number of batches forwarded and the names of the layers
    recalibrated.
    """
    batches = iter(batches)
    first = next(batches, _END)
    if first is _END:
        raise ValueError('recalibrate_norm_statistics: no batches to '
                         'average the statistics over')
    forward = model if forward is None else forward
    training = {m: m.training for m in model.modules()}
    model.train()
    layers = statistics_layers(model)
    saved = {m: (m.momentum, [b.clone() for b in _statistics(m)])
             for _, m in layers}
    try:
        if not layers:
            raise ValueError(
                'recalibrate_norm_statistics: the model has no BatchNorm or '
                'BCN estimate stage in training mode after model.train()')
        for _, m in layers:
            m.momentum = None
            if isinstance(m, EstimatedBatchNorm):
                m.num_batches_tracked.zero_()  # the next update copies
            else:
                m.reset_running_stats()
        count = 0
        with torch.no_grad():
            for batch in itertools.chain([first], batches):
                forward(batch)
                count += 1
        _pool_over_ranks([m for _, m in layers if isinstance(m, _BatchNorm)])
        recalibrated = []
        for name, m in layers:
            if m.num_batches_tracked > 0:
                recalibrated.append(name)
            else:  # no (finite) batch reached it
                for buffer, old in zip(_statistics(m), saved[m][1]):
                    buffer.copy_(old)
    finally:
        for m, (momentum, _) in saved.items():
            m.momentum = momentum
        for m, mode in training.items():
            m.training = mode
    return Recalibration(count, recalibrated)


_END = object()


def statistics_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(name, layer) of each layer in training mode that keeps running
    statistics: a ``_BatchNorm`` that tracks them, or a BCN estimate stage."""
    return [(name, m) for name, m in model.named_modules() if m.training
            and (isinstance(m, EstimatedBatchNorm) or isinstance(
                m, _BatchNorm) and m.track_running_stats)]


def _statistics(m: nn.Module) -> List[torch.Tensor]:
    return [m.running_mean, m.running_var, m.num_batches_tracked]


@torch.no_grad()
def _pool_over_ranks(layers: List[_BatchNorm]) -> None:
    """Each BN's statistics: the average over the batches of all ranks."""
    if not multi_rank() or not layers:
        return
    # Per layer: its count of batches, and its sums of their statistics
    # (the count times their average); summed over ranks.
    parts = []
    for m in layers:
        count = m.num_batches_tracked.double().view(1)
        parts += [count, m.running_mean.double() * count,
                  m.running_var.double() * count]
    packed = torch.cat(parts)
    dist.all_reduce(packed)
    sizes = [1 + 2 * m.num_features for m in layers]
    for m, part in zip(layers, packed.split(sizes)):
        count, sums = part[0], part[1:].view(2, -1)
        if count > 0:
            m.running_mean.copy_(sums[0] / count)
            m.running_var.copy_(sums[1] / count)
            m.num_batches_tracked.fill_(int(count))
