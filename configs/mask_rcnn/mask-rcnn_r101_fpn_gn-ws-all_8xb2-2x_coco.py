# Mask R-CNN R-101-FPN on COCO, GN+WS in backbone, FPN and heads.
# 8 processes x 2 images (total batch 16), SGD lr 0.02 as mmdet's stock and
# gn+ws configs (auto_scale_lr base_batch_size=16: with another total batch
# B use lr = 0.02 * B / 16, mmdet's `--auto-scale-lr`).
# Schedule 2x: 24 epochs, LR x0.1 after epochs 16 and 22.
_base_ = './mask-rcnn_r50_fpn_gn-ws-all_8xb2-2x_coco.py'

# ImageNet-pretrained GN+WS ResNet-101 of the WS authors (JHU), as mmdet's
# gn+ws configs: torchvision-style ResNet, WS variant 'A' (ConvWS default).
model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='open-mmlab://jhu/resnet101_gn_ws')))
