"""torch ``nn.Module``s for WS and BCN; registered into OpenMMLab by ``ws_mm.registry``."""
from .batch_channel_norm import BatchChannelNorm, EstimatedBatchNorm
from .conv_ws import (WS_CONVS, ConvTransposeWS2d, ConvWS1d, ConvWS2d,
                      ConvWS3d)

__all__ = [
    'ConvWS1d', 'ConvWS2d', 'ConvWS3d', 'ConvTransposeWS2d', 'WS_CONVS',
    'BatchChannelNorm', 'EstimatedBatchNorm'
]
