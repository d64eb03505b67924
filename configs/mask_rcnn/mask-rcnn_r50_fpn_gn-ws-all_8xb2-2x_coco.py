# Mask R-CNN R-50-FPN on COCO, GN+WS in backbone, FPN and heads.
# 8 processes x 2 images (total batch 16), SGD lr 0.02 as mmdet's stock and
# gn+ws configs (auto_scale_lr base_batch_size=16: with another total batch
# B use lr = 0.02 * B / 16, mmdet's `--auto-scale-lr`).
# Schedule 2x: 24 epochs, LR x0.1 after epochs 16 and 22.
_base_ = [
    '../_base_/switch/mask-rcnn_gn-ws-all.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_2x.py',
    'mmdet::_base_/default_runtime.py',
]

# ImageNet-pretrained GN+WS ResNet-50 of the WS authors (JHU), as mmdet's
# gn+ws configs: torchvision-style ResNet, WS variant 'A' (ConvWS default).
model = dict(
    backbone=dict(
        init_cfg=dict(
            type='Pretrained',
            checkpoint='open-mmlab://jhu/resnet50_gn_ws')))
