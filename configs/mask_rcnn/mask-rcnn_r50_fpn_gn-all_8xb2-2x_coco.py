# Mask R-CNN R-50-FPN on COCO, GN in backbone, FPN and heads (the GN baseline).
# 8 processes x 2 images (total batch 16), SGD lr 0.02 as mmdet's stock and
# gn+ws configs (auto_scale_lr base_batch_size=16: with another total batch
# B use lr = 0.02 * B / 16, mmdet's `--auto-scale-lr`).
# Schedule 2x: 24 epochs, LR x0.1 after epochs 16 and 22.
_base_ = [
    '../_base_/switch/mask-rcnn_gn-all.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_2x.py',
    'mmdet::_base_/default_runtime.py',
]

# ImageNet-pretrained GN ResNet-50 from Detectron, as mmdet's gn/ configs.
# These weights take Caffe-style input (BGR, mean subtracted, std 1), hence
# the data preprocessor of mmdet's gn/ configs (the only non-switch edit).
model = dict(
    data_preprocessor=dict(
        mean=[103.530, 116.280, 123.675],
        std=[1.0, 1.0, 1.0],
        bgr_to_rgb=False),
    backbone=dict(
        init_cfg=dict(
            type='Pretrained',
            checkpoint='open-mmlab://detectron/resnet50_gn')))
