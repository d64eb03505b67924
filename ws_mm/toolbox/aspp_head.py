"""DeepLabV3's ASPP head as the paper and the authors' code fuse it.

mmseg's ``ASPPHead`` fuses its five concatenated branches with a 3x3 conv;
DeepLabV3 (Chen et al., arXiv:1706.05587, sec. 3.3) and the code behind the
WS / BCN paper's Table 11 (Batch-Channel-Normalization, DeepLabV3/deeplab.py,
``ASPP.conv2``) use a 1x1 conv, with its norm and ReLU, before the classifier.
The Table 11 configs import this module (``custom_imports``); it needs mmseg.
"""
from mmcv.cnn import ConvModule
from mmseg.models.decode_heads import ASPPHead
from mmseg.registry import MODELS


@MODELS.register_module()
class ASPPHeadFuse1x1(ASPPHead):
    """mmseg's ``ASPPHead`` with the branches fused by a 1x1 conv.

    Takes ``ASPPHead``'s arguments; only the fusion (``bottleneck``) differs.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bottleneck = ConvModule(
            (len(self.dilations) + 1) * self.channels,
            self.channels,
            1,
            conv_cfg=self.conv_cfg,
            norm_cfg=self.norm_cfg,
            act_cfg=self.act_cfg)
