"""The math of WS and BCN as functions of tensors (no modules, no registries).

All are pure but :func:`channel_stats`, which averages its statistics over the
ranks of ``torch.distributed`` when a process group is running (and
:func:`update_estimates` and :func:`batch_channel_norm`, whose ``channel``
may be :class:`Estimates`, which update estimates in place).
"""
from .batch_channel_norm import (Estimates, batch_channel_norm, channel_stats,
                                 group_norm_group_affine, moving_average_rate,
                                 pool_moments, sample_channel_moments,
                                 update_estimates)
from .conv_ws import ConvArgs, conv_ws
from .weight_standardization import (WS_VARIANTS, WSVariant, filter_rows,
                                     get_ws_variant, unfilter_rows,
                                     weight_standardization)

__all__ = [
    'weight_standardization', 'conv_ws', 'ConvArgs', 'get_ws_variant',
    'WSVariant', 'WS_VARIANTS', 'filter_rows', 'unfilter_rows',
    'batch_channel_norm', 'Estimates', 'channel_stats',
    'sample_channel_moments', 'pool_moments', 'moving_average_rate',
    'update_estimates', 'group_norm_group_affine'
]
