# Mask R-CNN R-50-FPN on COCO, BCN+WS in backbone, FPN and heads.
# 8 processes x 2 images (total batch 16), SGD lr 0.02 as mmdet's stock and
# gn+ws configs (auto_scale_lr base_batch_size=16: with another total batch
# B use lr = 0.02 * B / 16, mmdet's `--auto-scale-lr`).
# Schedule 2x: 24 epochs, LR x0.1 after epochs 16 and 22.
_base_ = [
    '../_base_/switch/mask-rcnn_bcn-ws-all.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_2x.py',
    'mmdet::_base_/default_runtime.py',
]

# ImageNet-pretrained BCN+WS ResNet-50 of the BCN authors (WS variant 'B'),
# converted to mmdet's ResNet names first:
#   python tools/convert_pretrained.py SRC \
#       checkpoints/resnet50_bcn_ws.pth
# (SRC: the authors' ResNet-50 BCN+WS checkpoint; the path is relative to
# the repository root, where tools/train.py runs).
model = dict(
    backbone=dict(
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/resnet50_bcn_ws.pth')))
