"""Registers ws_mm's layers into mmengine's root ``MODELS`` registry.

The root registry is the parent of every toolbox's (mmdet, mmseg, ...), so the
names resolve under any default scope and in code that sets none. mmcv already
registers ``ConvWS`` there (its ``ConvWS2d``); ws_mm takes the name over with a
drop-in that gives the same numbers by default, so existing gn+ws configs and
checkpoints run unchanged. mmcv's bricks are imported first so that its own
registration cannot later overwrite ours.
"""
import mmcv.cnn  # noqa: F401  (registers mmcv's layers first, see above)
from mmengine.registry import MODELS

from ..layers import (BatchChannelNorm, ConvTransposeWS2d, ConvWS1d, ConvWS2d,
                     ConvWS3d)

MODELS.register_module('ConvWS', module=ConvWS2d, force=True)
MODELS.register_module('ConvWS1d', module=ConvWS1d)
MODELS.register_module('ConvWS2d', module=ConvWS2d)
MODELS.register_module('ConvWS3d', module=ConvWS3d)
MODELS.register_module('ConvTransposeWS2d', module=ConvTransposeWS2d)
MODELS.register_module('BCN', module=BatchChannelNorm)
