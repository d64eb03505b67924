"""The math of WS and BCN as pure functions of tensors (no modules, no registries)."""
from .batch_channel_norm import (channel_stats, group_norm_group_affine,
                                 moving_average_rate)
from .weight_standardization import (WS_VARIANTS, WSVariant, get_ws_variant,
                                     weight_standardization)

__all__ = [
    'weight_standardization', 'get_ws_variant', 'WSVariant', 'WS_VARIANTS',
    'channel_stats', 'moving_average_rate', 'group_norm_group_affine'
]
