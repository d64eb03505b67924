# Mask R-CNN R-101-FPN on COCO, GN in backbone, FPN and heads (the GN
# baseline).
# 8 processes x 2 images (total batch 16), SGD lr 0.02 as mmdet's stock and
# gn+ws configs (auto_scale_lr base_batch_size=16: with another total batch
# B use lr = 0.02 * B / 16, mmdet's `--auto-scale-lr`).
# Schedule 20-23-24e: 24 epochs, LR x0.1 after epochs 20 and 23.
_base_ = './mask-rcnn_r50_fpn_gn-all_8xb2-20-23-24e_coco.py'

# ImageNet-pretrained GN ResNet-101 from Detectron, as mmdet's gn/ configs.
model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='open-mmlab://detectron/resnet101_gn')))
