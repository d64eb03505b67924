"""Batch-Channel Normalization (BCN) modules.

Qiao et al., "Micro-Batch Training with Batch-Channel Normalization and
Weight Standardization", arXiv:1903.10520. The layout follows the official
code, so its BCN+WS checkpoints load by name: a per-channel stage ``pbn``
(``weight``, ``bias``, ``running_mean``, ``running_var``,
``num_batches_tracked``, exactly BatchNorm's keys, plus our count
``num_nonfinite_batches``, 0 when a checkpoint lacks it), then group
normalization with a per-group affine whose ``weight`` / ``bias`` have shape
``(1, G, 1)``.

Registration in the OpenMMLab registries is done elsewhere; this file only
needs torch.
"""
import logging
import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..functional.batch_channel_norm import (Estimates, batch_channel_norm,
                                             channel_stats,
                                             group_norm_group_affine,
                                             moving_average_rate,
                                             update_estimates)
from ..functional.bcn_kernels import compiled_for
from ..functional.validate import non_negative, positive_int, rate

logger = logging.getLogger('ws_mm')


class EstimatedBatchNorm(nn.Module):
    """Per-channel normalization with running estimates of batch statistics.

    The micro-batch form of BCN's first stage (arXiv:1903.10520): the input
    is normalized as in BatchNorm's eval mode,
    ``(x - running_mean) / sqrt(running_var + eps) * weight + bias``, in
    training and evaluation alike, and no gradient flows through the
    estimates. In training mode the estimates are first updated from the
    statistics of the current batch (its mean, and its second moment around
    the running mean as in the official code; averaged over all ranks when
    ``torch.distributed`` is initialized, see :func:`channel_stats`) at the
    rate of :func:`moving_average_rate`; updating before normalizing means
    the very first training batch is normalized by its own statistics.

    A batch whose statistics are not finite leaves the estimates unchanged
    and is counted in the buffer ``num_nonfinite_batches`` (the rule, also
    across ranks: docs/layers.md, "Non-finite batches").

    Deliberately not a ``_BatchNorm``: detectors' ``norm_eval=True`` puts
    every ``_BatchNorm`` in eval mode, which would freeze the estimates, and
    ``SyncBatchNorm.convert_sync_batchnorm`` would replace it by a layer that
    normalizes with batch statistics.

    Args:
        num_features: number of channels ``C`` of an ``(N, C, *)`` input.
        eps: added to the variance estimate inside the square root.
        momentum: the rate the moving average settles at; ``None`` for the
            cumulative average of all batches.
        affine: learn a per-channel ``weight`` and ``bias``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5,
                 momentum: Optional[float] = 0.1, affine: bool = True):
        super().__init__()
        owner = type(self).__name__
        self.num_features = positive_int(owner, 'num_features', num_features)
        self.eps = non_negative(owner, 'eps', eps)
        self.momentum = rate(owner, 'momentum', momentum, allow_none=True)
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter('weight', None)
            self.register_parameter('bias', None)
        self.register_buffer('running_mean', torch.zeros(num_features))
        self.register_buffer('running_var', torch.ones(num_features))
        self.register_buffer('num_batches_tracked',
                             torch.tensor(0, dtype=torch.long))
        self.register_buffer('num_nonfinite_batches',
                             torch.tensor(0, dtype=torch.long))
        self._warned_nonfinite = False

    def forward(self, x: Tensor) -> Tensor:
        mean, var = self.running_mean, self.running_var
        if self.training:
            self.update_estimates(*channel_stats(x))
            # The graph must keep the values used here: the next training
            # forward updates the buffers in place, possibly before this
            # backward (a shared head calls the layer once per level).
            mean, var = mean.clone(), var.clone()
        return F.batch_norm(x, mean, var, self.weight, self.bias,
                            training=False, momentum=0., eps=self.eps)

    def estimates(self) -> Estimates:
        """The estimates as BCN's fused form takes them in training: they
        are updated from the batch before normalizing."""
        buffers = self._buffers  # see BatchChannelNorm.forward
        tracked = int(buffers['num_batches_tracked'])
        rate = moving_average_rate(self.momentum, tracked) if tracked else None
        return Estimates(buffers['running_mean'], buffers['running_var'], rate,
                         self._count)

    def update_estimates(self, batch_mean: Tensor, batch_var: Tensor) -> bool:
        """The training update from a batch's per-channel mean and biased
        variance (:func:`channel_stats`: of all ranks); ``False`` if the
        batch was skipped."""
        kept = update_estimates(*self.estimates()[:3], batch_mean, batch_var)
        self._count(kept)
        return kept

    def _count(self, kept: bool) -> None:
        """``Estimates.counted``."""
        if kept:
            self.num_batches_tracked.add_(1)
        else:
            self._skip_nonfinite_batch()

    def _skip_nonfinite_batch(self) -> None:
        self.num_nonfinite_batches.add_(1)
        if not self._warned_nonfinite:
            self._warned_nonfinite = True
            logger.warning(
                'ws_mm: %s(%s) got a training batch whose statistics are not '
                'finite (NaN or Inf) and left its running estimates '
                'unchanged; such batches are counted in its '
                'num_nonfinite_batches buffer, without another message (the '
                'layers that counted some: [name for name, b in '
                "model.named_buffers() if name.endswith('num_nonfinite_"
                "batches') and b])", type(self).__name__, self.extra_repr())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints from before the count, the official BCN code's and
        # those of a BatchNorm stage (mode='batch') have none: nothing was
        # counted.
        state_dict.setdefault(prefix + 'num_nonfinite_batches',
                              torch.zeros_like(self.num_nonfinite_batches))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f'{self.num_features}, eps={self.eps}, '
                f'momentum={self.momentum}, affine={self.affine}')


class _AnyRankBatchNorm(_BatchNorm):
    """BatchNorm for any ``(N, C, *)`` input, so BCN works in 1d, 2d and 3d.

    A ``_BatchNorm`` on purpose: ``SyncBatchNorm.convert_sync_batchnorm``
    (mmengine's ``sync_bn='torch'``) then converts it like any BN.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(
                f'expected an (N, C, *) input, got shape {tuple(input.shape)}')


def _batch_norm_stage(bn: _BatchNorm, x: Tensor):
    """How BCN's fused form runs a BatchNorm first stage ``bn`` (ours, or
    one that mmengine converted it to) on ``x``, decided as
    ``_BatchNorm.forward`` does: the statistics to normalize with (``None``
    for the batch's own, or the running ones), and the update of
    ``bn``'s running statistics from the batch's mean and biased variance
    (``None`` if there is none)."""
    buffers = bn._buffers  # see BatchChannelNorm.forward
    mean, var = buffers['running_mean'], buffers['running_var']
    if not bn.training and mean is not None:
        return (mean, var), None
    count = x.numel() // x.size(1)
    if bn.training and count <= 1:  # BatchNorm's own check
        raise ValueError('Expected more than 1 value per channel when '
                         f'training, got input size {tuple(x.shape)}')
    if not (bn.training and bn.track_running_stats):
        return None, None

    def update(batch_mean, batch_var):
        # no gradient is recorded: BCN's batch statistics have none
        tracked = buffers['num_batches_tracked'].add_(1)
        rate = bn.momentum
        if rate is None:  # the cumulative average
            rate = 1.0 / tracked.to(mean.dtype)
        mean.lerp_(batch_mean.to(mean.dtype), rate)
        var.lerp_((batch_var * (count / (count - 1))).to(var.dtype), rate)

    return None, update


# Whether BCN runs as one normalization: None, where its compiled kernels
# run (CPU); True / False, always / never (tests and benchmarks compare).
# With the kernels it is faster than the two stages at every size measured
# (the rule table of tools/benchmark_speed.py). Elsewhere it would be
# dozens of small torch ops, each a kernel launch on a GPU: the two stages
# run there until measured otherwise (tests/test_gpu.py times both).
FUSED: Optional[bool] = None


class BatchChannelNorm(nn.Module):
    """Batch-Channel Normalization (BCN, arXiv:1903.10520).

    Computes ``group_norm(pbn(x))``: first a per-channel normalization with
    batch knowledge and a per-channel affine (the submodule ``pbn``), then a
    group normalization of each sample over ``num_groups`` groups with a
    per-group affine ``weight`` / ``bias`` of shape ``(1, G, 1)`` (initialized
    to 1 / 0; biased variance, eps inside the square root), as in the
    official code. On CPU both stages run as one normalization
    (:func:`~ws_mm.functional.batch_channel_norm`), with ``pbn`` holding the
    first stage's parameters and statistics and updating them; elsewhere
    (and with an ``nn.SyncBatchNorm`` stage) as two, with the same results
    (:meth:`_runs_fused`).

    ``mode`` picks the first stage:

    * ``'estimate'`` (micro-batch training, the default):
      :class:`EstimatedBatchNorm`, running estimates of the batch statistics
      used in training and evaluation, averaged across ranks.
    * ``'batch'`` (large batches): BatchNorm with batch statistics in
      training; ``sync_bn=True`` makes it ``nn.SyncBatchNorm`` (GPU only),
      as the official segmentation code does. In mmdet/mmseg backbones set
      ``norm_eval=False``: ``norm_eval=True`` freezes this BN stage (the
      layer warns once if it finds it so).

    Built by ``build_norm_layer`` as ``cls(num_features, eps=..., **cfg)``;
    ``_abbr_ = 'bcn'`` names the attribute (``bcn1``, ...) in OpenMMLab
    models.

    Args:
        num_features: number of channels ``C`` of an ``(N, C, *)`` input.
        num_groups: number of groups ``G``; must divide ``num_features``.
        eps: added to the variances inside the square root (both stages).
        mode: ``'estimate'`` or ``'batch'``.
        momentum: moving-average rate of the first stage's running
            statistics, in ``(0, 1]``, or ``None`` for the cumulative
            average (as BatchNorm's).
        sync_bn: in ``'batch'`` mode, synchronize batch statistics across
            ranks with ``nn.SyncBatchNorm``.
    """

    _abbr_ = 'bcn'
    MODES = ('estimate', 'batch')

    def __init__(self, num_features: int, num_groups: int = 32,
                 eps: float = 1e-5, mode: str = 'estimate',
                 momentum: Optional[float] = 0.1, sync_bn: bool = False):
        super().__init__()
        _check_config(num_features, num_groups, eps, mode, momentum, sync_bn)
        self.num_features = num_features
        self.num_groups = num_groups
        self.eps = float(eps)
        self.mode = mode
        if mode == 'estimate':
            self.pbn = EstimatedBatchNorm(num_features, eps, momentum)
        elif sync_bn:
            self.pbn = nn.SyncBatchNorm(num_features, eps, momentum)
        else:
            self.pbn = _AnyRankBatchNorm(num_features, eps, momentum)
        self.weight = nn.Parameter(torch.ones(1, num_groups, 1))
        self.bias = nn.Parameter(torch.zeros(1, num_groups, 1))
        self._warned_frozen_pbn = False

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.size(1) != self.num_features:
            raise ValueError(
                f'BatchChannelNorm expected an input of shape (N, '
                f'{self.num_features}, *), got shape {tuple(x.shape)}')
        pbn = self._modules['pbn']  # see the lookups below
        if (self.mode == 'batch' and self.training and not pbn.training
                and not self._warned_frozen_pbn):
            warnings.warn(
                'BatchChannelNorm(mode="batch") is training but its BN stage '
                '`pbn` is in eval mode, so the batch statistics are frozen to '
                'the running ones. norm_eval=True in mmdet/mmseg backbones '
                'does this, and so does FreezeNormStatisticsHook, on '
                'purpose. If you did not mean it, set norm_eval=False in the '
                'backbone config of a BCN model.', UserWarning, stacklevel=2)
            self._warned_frozen_pbn = True
        if not self._runs_fused(x, pbn):
            return group_norm_group_affine(pbn(x), self.num_groups,
                                           self.weight, self.bias, self.eps)
        # Read from nn.Module's dicts: its attribute lookup costs about
        # 0.6 us a tensor, together a third of GN's whole call on a mask
        # head's input.
        params, stage, buffers = (self._parameters, pbn._parameters,
                                  pbn._buffers)
        if isinstance(pbn, EstimatedBatchNorm):
            channel, observe = (pbn.estimates() if pbn.training else
                                (buffers['running_mean'],
                                 buffers['running_var'])), None
        else:
            channel, observe = _batch_norm_stage(pbn, x)
        return batch_channel_norm(x, stage['weight'], stage['bias'],
                                  params['weight'], params['bias'], self.eps,
                                  channel, observe)

    @staticmethod
    def _runs_fused(x: Tensor, pbn: nn.Module) -> bool:
        """Whether a call on ``x`` runs as one normalization rather than as
        its two stages (the same results): as ``FUSED`` says, and not with
        an ``nn.SyncBatchNorm`` stage ``pbn`` (its collective is its own)."""
        if isinstance(pbn, nn.SyncBatchNorm):
            return False
        return FUSED if FUSED is not None else compiled_for(x) is not None

    @torch.no_grad()
    def init_weights(self) -> None:
        """Revive a layer that a constant init of the whole module zeroed.

        mmengine calls this after the parents' ``init_cfg``. The ResNets of
        mmdet and mmseg, trained from scratch, zero each block's last norm
        (``zero_init_residual``) with a constant init that reaches the
        per-channel stage as well: with both affines at zero the output is
        zero and so is every gradient reaching either affine, and the
        residual branch never learns. The per-channel affine goes back to 1
        and 0, which keeps the output at zero (the group affine still is)
        and lets the layer learn, as a zero-initialized BN or GN does.
        """
        affines = (self.weight, self.bias, self.pbn.weight, self.pbn.bias)
        if not any(a.any() for a in affines):
            self.pbn.weight.fill_(1)

    def extra_repr(self) -> str:
        return (f'{self.num_features}, num_groups={self.num_groups}, '
                f'mode={self.mode!r}, eps={self.eps}')


def _check_config(num_features, num_groups, eps, mode, momentum,
                  sync_bn) -> None:
    """Reject a bad BatchChannelNorm config with a message saying the fix."""
    owner = 'BatchChannelNorm'
    positive_int(owner, 'num_features', num_features)
    positive_int(owner, 'num_groups', num_groups)
    if num_features % num_groups:
        divisors = [d for d in range(1, num_features + 1)
                    if num_features % d == 0]
        raise ValueError(
            f'BatchChannelNorm: num_groups={num_groups} does not divide '
            f'num_features={num_features}; use one of {divisors}')
    if mode not in BatchChannelNorm.MODES:
        raise ValueError(f'BatchChannelNorm: unknown mode {mode!r}; use one '
                         f'of {list(BatchChannelNorm.MODES)}')
    non_negative(owner, 'eps', eps)
    rate(owner, 'momentum', momentum, allow_none=True)
    if sync_bn and mode == 'estimate':
        raise ValueError(
            'BatchChannelNorm: sync_bn=True only applies to mode="batch"; '
            'mode="estimate" already averages its statistics across ranks, '
            'so drop sync_bn')
