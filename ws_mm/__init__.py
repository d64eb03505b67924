"""ws_mm: Weight Standardization and Batch-Channel Normalization for OpenMMLab.

Qiao et al., "Micro-Batch Training with Batch-Channel Normalization and Weight
Standardization", arXiv:1903.10520. Importing ws_mm registers its layers
(``ConvWS`` and friends, ``BCN``) into mmengine's root ``MODELS`` registry, so
configs switch to them with ``conv_cfg`` / ``norm_cfg`` and
``custom_imports = dict(imports=['ws_mm'])``. It also makes mmengine load
its own checkpoints safely on torch >= 2.6 (see ``ws_mm.toolbox.checkpoint``).
"""
from .toolbox import hooks, registry  # noqa: F401  (register layers, hook)
from .toolbox.checkpoint import register_safe_loader
from .toolbox.recalibration import recalibrate_norm_statistics
from .deploy import fold_weight_standardization
from .functional import conv_ws, set_compile, weight_standardization
from .layers import (BatchChannelNorm, ConvTransposeWS2d, ConvWS1d, ConvWS2d,
                     ConvWS3d, EstimatedBatchNorm)
from .version import __version__

register_safe_loader()

__all__ = [
    'ConvWS1d', 'ConvWS2d', 'ConvWS3d', 'ConvTransposeWS2d',
    'BatchChannelNorm', 'EstimatedBatchNorm', 'weight_standardization',
    'conv_ws', 'set_compile', 'fold_weight_standardization',
    'recalibrate_norm_statistics', '__version__'
]
