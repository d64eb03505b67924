# GN+WS "all": weight-standardized convs followed by GroupNorm(32) in the
# backbone, FPN, bbox head (4 convs + 1 fc, as the GN paper) and mask head.
# Exactly the switch of mmdet's gn+ws/mask-rcnn_r50_fpn_gn-ws-all_2x_coco.py,
# on top of mmdet's Mask R-CNN R-50-FPN model. The RPN head and the
# predictors (fc_cls, fc_reg, conv_logits) stay as they are, as in mmdet.
# ConvWS is ws_mm's drop-in for mmcv's (variant 'A': the same numbers, the
# variant of the JHU GN+WS ImageNet checkpoints).
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py', '../ws_mm_imports.py']

conv_cfg = dict(type='ConvWS')
norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    backbone=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg),
    neck=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            conv_out_channels=256,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg),
        mask_head=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg)))
