"""Registers ws_mm's layers into mmengine's root ``MODELS`` registry.

The root registry is the parent of every toolbox's (mmdet, mmseg, ...), so the
names resolve under any default scope and in code that sets none. mmcv already
registers ``ConvWS`` there (its ``ConvWS2d``); ws_mm takes the name over with a
drop-in that gives the same numbers by default, so existing gn+ws configs and
checkpoints run unchanged. mmcv's bricks are imported first so that its own
registration cannot later overwrite ours. ``AuthorsPretrained`` (the authors'
ImageNet checkpoints, converted on load) goes into mmengine's root
``WEIGHT_INITIALIZERS``. The layers' messages (the standard
library's ``ws_mm`` logger) go to mmengine's current logger from here.
"""
import logging

import mmcv.cnn  # noqa: F401  (registers mmcv's layers first, see above)
from mmengine.logging import print_log
from mmengine.registry import MODELS, WEIGHT_INITIALIZERS

from ..layers import WS_CONVS, BatchChannelNorm, ConvWS2d
from .pretrained import AuthorsPretrainedInit

for _cls in WS_CONVS:
    MODELS.register_module(module=_cls)
MODELS.register_module('ConvWS', module=ConvWS2d, force=True)
MODELS.register_module('BCN', module=BatchChannelNorm)
WEIGHT_INITIALIZERS.register_module('AuthorsPretrained',
                                    module=AuthorsPretrainedInit)


class _ToCurrentLogger(logging.Handler):
    """The layers log with the standard library (they need only torch); in
    an OpenMMLab run their messages go to the runner's logger."""

    def emit(self, record: logging.LogRecord) -> None:
        print_log(record.getMessage(), logger='current', level=record.levelno)


_logger = logging.getLogger('ws_mm')
_logger.setLevel(logging.INFO)
_logger.addHandler(_ToCurrentLogger())
_logger.propagate = False
