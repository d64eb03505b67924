# Mask R-CNN R-101-FPN on COCO, BCN+WS in backbone, FPN and heads.
# 8 processes x 2 images (total batch 16), SGD lr 0.02 as mmdet's stock and
# gn+ws configs (auto_scale_lr base_batch_size=16: with another total batch
# B use lr = 0.02 * B / 16, mmdet's `--auto-scale-lr`).
# Schedule 20-23-24e: 24 epochs, LR x0.1 after epochs 20 and 23.
_base_ = './mask-rcnn_r50_fpn_bcn-ws-all_8xb2-20-23-24e_coco.py'

# ImageNet-pretrained BCN+WS ResNet-101 of the BCN authors (WS variant 'B';
# Batch-Channel-Normalization/imagenet/README.md), downloaded and converted
# to the mmdet ResNet's names on load.
model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='AuthorsPretrained',
            checkpoint='https://cs.jhu.edu/~syqiao/BatchChannelNormalization/'
            'rn101_bcn_ws.pth')))
