# Mask R-CNN R-50-FPN on COCO, BN (mmdet's stock model, the BN baseline).
# 8 processes x 2 images (total batch 16), SGD lr 0.02 as mmdet's stock and
# gn+ws configs (auto_scale_lr base_batch_size=16: with another total batch
# B use lr = 0.02 * B / 16, mmdet's `--auto-scale-lr`).
# Schedule 2x: 24 epochs, LR x0.1 after epochs 16 and 22.
_base_ = [
    '../_base_/switch/mask-rcnn_bn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_2x.py',
    'mmdet::_base_/default_runtime.py',
]

# ImageNet-pretrained ResNet-50 from torchvision, as mmdet's stock config.
model = dict(
    backbone=dict(
        init_cfg=dict(
            type='Pretrained',
            checkpoint='torchvision://resnet50')))
