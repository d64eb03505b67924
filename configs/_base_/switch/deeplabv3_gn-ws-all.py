# GN+WS "all" for DeepLabV3: weight-standardized convs followed by
# GroupNorm(32) in the backbone, the decode head (ASPPHead) and the auxiliary
# head (FCNHead), on top of mmseg's DeepLabV3 R-50-D8 model
# (mmseg::_base_/models/deeplabv3_r50-d8.py, SyncBN everywhere). The
# classifiers (conv_seg) stay plain convs. ConvWS is variant 'A' (the
# variant of the JHU GN+WS ImageNet checkpoints).
_base_ = ['mmseg::_base_/models/deeplabv3_r50-d8.py', '../ws_mm_imports.py']

conv_cfg = dict(type='ConvWS')
norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    backbone=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg),
    decode_head=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg),
    auxiliary_head=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg))
