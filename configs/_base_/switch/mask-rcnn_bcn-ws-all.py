# BCN+WS "all": the GN+WS switch (mask-rcnn_gn-ws-all.py) with BCN where GN
# is, on top of mmdet's Mask R-CNN R-50-FPN model.
# - BCN in 'estimate' mode, the micro-batch form (1-2 images per process):
#   running estimates of the channel statistics, updated in training and
#   averaged across ranks, then GroupNorm(32) with a per-group affine.
# - WS variant 'B' (docs/layers.md): the variant the authors'
#   BCN+WS ImageNet checkpoints were trained with.
# - norm_eval=False: mmdet's ResNet defaults to norm_eval=True, which would
#   put every BN-like stage in eval mode during training.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py', '../ws_mm_imports.py']

conv_cfg = dict(type='ConvWS', variant='B')
norm_cfg = dict(type='BCN', num_groups=32, mode='estimate', momentum=0.1)
model = dict(
    backbone=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, norm_eval=False),
    neck=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            conv_out_channels=256,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg),
        mask_head=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg)))
