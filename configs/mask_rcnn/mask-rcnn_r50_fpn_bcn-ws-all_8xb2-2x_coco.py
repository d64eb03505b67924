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

# ImageNet-pretrained BCN+WS ResNet-50 of the BCN authors (WS variant 'B';
# Batch-Channel-Normalization/imagenet/README.md), downloaded and converted
# to the mmdet ResNet's names on load.
model = dict(
    backbone=dict(
        init_cfg=dict(
            type='AuthorsPretrained',
            checkpoint='https://cs.jhu.edu/~syqiao/BatchChannelNormalization/'
            'rn50_bcn_ws.pth')))
