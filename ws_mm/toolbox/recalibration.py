"""Recalibrating and freezing normalization statistics.

The running statistics a model ends training with are moving averages over
batches seen with older weights, and in micro-batch training BCN's estimates
average tiny batches. Recalibration replaces them by the plain average over N
batches of the model as it is (PreciseBN; Wu and Johnson, arXiv:2105.07576):
:func:`recalibrate_norm_statistics` without a runner, and
:class:`NormRecalibrationHook` in an mmengine run::

    custom_hooks = [dict(type='NormRecalibrationHook', num_batches=100,
                         when='before_val')]

:class:`FreezeNormStatisticsHook` keeps them as they are through a training
run instead, for fine-tuning at micro-batches from a large-batch model.
"""
import copy
import time
from itertools import chain, islice
from typing import (Any, Callable, Iterable, List, NamedTuple, Optional,
                    Tuple)

import torch
import torch.distributed as dist
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..functional.batch_channel_norm import multi_rank
from ..layers.batch_channel_norm import EstimatedBatchNorm


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
    layers = _statistics_layers(model)
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
            for batch in chain([first], batches):
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


def _statistics_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
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


@HOOKS.register_module()
class NormRecalibrationHook(Hook):
    """Recalibrate the model's normalization statistics in an mmengine run.

    Runs :func:`recalibrate_norm_statistics` over ``num_batches`` batches of
    the config's ``train_dataloader``, each through the model's
    ``data_preprocessor`` and its forward in ``'loss'`` mode (the forward of
    training, which reaches every head that training trains). The batches
    come from a loader of its own on the training data set, so the
    training's data order is not disturbed; each call continues where the
    previous one stopped.

    Args:
        num_batches: batches per rank to average over.
        when: ``'before_val'`` (before every validation),
            ``'end_of_training'`` (after the last training iteration, so the
            last checkpoint and the final validation have the recalibrated
            statistics) or ``'before_test'`` (``tools/test.py``: a
            checkpoint's statistics recalibrated, not saved).
    """

    priority = 'ABOVE_NORMAL'  # before the last iteration's checkpoint
    WHEN = ('before_val', 'end_of_training', 'before_test')

    def __init__(self, num_batches: int = 100, when: str = 'before_val'):
        if (not isinstance(num_batches, int) or isinstance(num_batches, bool)
                or num_batches < 1):
            raise ValueError(f'NormRecalibrationHook: num_batches must be a '
                             f'positive int, got {num_batches!r}')
        if when not in self.WHEN:
            raise ValueError(f'NormRecalibrationHook: unknown when={when!r}; '
                             f'use one of {list(self.WHEN)}')
        self.num_batches = num_batches
        self.when = when
        self._batches = None

    def before_run(self, runner) -> None:
        if runner.cfg.get('train_dataloader') is None:
            raise ValueError(
                'NormRecalibrationHook: the config has no train_dataloader '
                'to recalibrate the normalization statistics with')

    def before_val(self, runner) -> None:
        if self.when == 'before_val':
            self.recalibrate(runner)

    def before_test(self, runner) -> None:
        if self.when == 'before_test':
            self.recalibrate(runner)

    def after_train_iter(self, runner, batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        if self.when == 'end_of_training' and self.is_last_train_iter(runner):
            self.recalibrate(runner)

    def recalibrate(self, runner) -> Recalibration:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        if self._batches is None:
            loader_cfg = copy.deepcopy(runner.cfg.train_dataloader)
            loader_cfg.update(dataset=runner.train_dataloader.dataset,
                              persistent_workers=False)
            self._batches = _repeat(
                runner.build_dataloader(loader_cfg, seed=runner.seed))

        def forward(batch):
            model._run_forward(model.data_preprocessor(batch, True), 'loss')

        start = time.perf_counter()
        done = recalibrate_norm_statistics(
            model, islice(self._batches, self.num_batches), forward)
        runner.logger.info(
            f'NormRecalibrationHook: recalibrated the statistics of '
            f'{len(done.layers)} normalization layers over {done.batches} '
            f'training batches in {time.perf_counter() - start:.1f} s')
        return done


@HOOKS.register_module()
class FreezeNormStatisticsHook(Hook):
    """Train with the normalization statistics fixed at their loaded values.

    Before every training iteration, the layers that
    :func:`recalibrate_norm_statistics` works on (every BN, SyncBN and BCN
    stage with running statistics that ``model.train()`` left training) go
    to eval mode: they normalize with their running statistics and do not
    update them, while their affine parameters and the rest of the model
    train. This is frozen BN, what ``norm_eval=True`` does for a backbone,
    applied to the whole model and to BCN's estimate stage, which
    ``norm_eval`` leaves training on purpose. For fine-tuning at a few
    images per process from a model trained with large batches, so that the
    statistics it learned are kept::

        custom_hooks = [dict(type='FreezeNormStatisticsHook')]
    """

    priority = 'VERY_HIGH'  # before any hook that forwards the model

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        for _, layer in _statistics_layers(model):
            layer.eval()


def _repeat(loader: Iterable) -> Iterable:
    """The loader's batches, epoch after epoch (none if it is empty)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            return
