"""ws_mm: Weight Standardization and Batch-Channel Normalization for OpenMMLab.

Qiao et al., "Micro-Batch Training with Batch-Channel Normalization and Weight
Standardization", arXiv:1903.10520. The layers and functions need torch
alone. Where mmcv and mmengine are installed, importing ws_mm also registers
the layers (``ConvWS`` and friends, ``BCN``), hooks and initializer into the
OpenMMLab registries and makes mmengine load its checkpoints safely
(:mod:`ws_mm.toolbox`), so configs switch with ``conv_cfg`` / ``norm_cfg`` and
``custom_imports = dict(imports=['ws_mm'])``.
"""
from .deploy import fold_weight_standardization
from .distributed import destroy_process_group
from .functional import conv_ws, weight_standardization
from .layers import (BatchChannelNorm, ConvTransposeWS2d, ConvWS1d, ConvWS2d,
                     ConvWS3d, EstimatedBatchNorm)
from .recalibration import recalibrate_norm_statistics
from .version import __version__

try:
    import mmcv  # noqa: F401
except ModuleNotFoundError as error:  # plain PyTorch: the layers only
    if error.name not in ('mmcv', 'mmengine'):
        raise
else:
    from . import toolbox  # noqa: F401  (registers into OpenMMLab)

__all__ = [
    'ConvWS1d', 'ConvWS2d', 'ConvWS3d', 'ConvTransposeWS2d',
    'BatchChannelNorm', 'EstimatedBatchNorm', 'weight_standardization',
    'conv_ws', 'fold_weight_standardization',
    'recalibrate_norm_statistics', 'destroy_process_group', '__version__'
]
