"""torch ``nn.Module``s for WS and BCN; registered into OpenMMLab by ``ws_mm.toolbox.registry``."""
from .batch_channel_norm import BatchChannelNorm, EstimatedBatchNorm
from .conv_ws import (WS_CONVS, ConvTransposeWS2d, ConvWS1d, ConvWS2d,
                      ConvWS3d, WSConvMixin)

__all__ = [
    'ConvWS1d', 'ConvWS2d', 'ConvWS3d', 'ConvTransposeWS2d', 'WS_CONVS',
    'WSConvMixin', 'BatchChannelNorm', 'EstimatedBatchNorm'
]
