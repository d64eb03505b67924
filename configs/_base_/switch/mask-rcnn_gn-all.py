# GN "all" (the baseline for GN+WS): GroupNorm(32) in backbone, FPN, bbox head
# and mask head, plain convs. The switch of mmdet's
# gn/mask-rcnn_r50_fpn_gn-all_2x_coco.py, on top of mmdet's Mask R-CNN R-50-FPN
# model; it is mask-rcnn_gn-ws-all.py without conv_cfg. (mmdet's gn/ configs
# also switch the data preprocessor to Caffe style for Detectron's GN
# ImageNet weights: that goes with the weights, so it is in the configs that
# load them, not here.)
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py', '../ws_mm_imports.py']

norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    backbone=dict(norm_cfg=norm_cfg),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            conv_out_channels=256,
            norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))
