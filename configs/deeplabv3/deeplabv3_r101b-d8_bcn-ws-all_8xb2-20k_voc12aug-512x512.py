# DeepLabV3 R-101-D8 (v1b stem) on PASCAL VOC 2012 + aug, BCN+WS in
# backbone, decode head (ASPP) and auxiliary head (FCN).
# 8 processes x 2 images: the same total batch (16), SGD lr 0.01 and
# 20k-iteration poly schedule as mmseg's stock 4xb4 config (with another
# total batch B use lr = 0.01 * B / 16). Crop 512x512.
_base_ = './deeplabv3_r50b-d8_bcn-ws-all_8xb2-20k_voc12aug-512x512.py'

# ImageNet-pretrained BCN+WS ResNet-101 of the BCN authors (WS variant 'B';
# Batch-Channel-Normalization/imagenet/README.md), downloaded and converted
# to the mmseg ResNet's names on load.
model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='AuthorsPretrained',
            checkpoint='https://cs.jhu.edu/~syqiao/BatchChannelNormalization/'
            'rn101_bcn_ws.pth')))
