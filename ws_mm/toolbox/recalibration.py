"""Recalibrating and freezing normalization statistics in an mmengine run.

:class:`NormRecalibrationHook` runs :func:`ws_mm.recalibrate_norm_statistics`
over training batches::

    custom_hooks = [dict(type='NormRecalibrationHook', num_batches=100,
                         when='before_val')]

:class:`FreezeNormStatisticsHook` keeps the statistics as they are through a
training run instead, for fine-tuning at micro-batches from a large-batch
model.
"""
import copy
import time
from itertools import islice
from typing import Iterable, Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ..functional.validate import positive_int
from ..recalibration import (Recalibration, recalibrate_norm_statistics,
                             statistics_layers)


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
        positive_int('NormRecalibrationHook', 'num_batches', num_batches)
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
        for _, layer in statistics_layers(model):
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
