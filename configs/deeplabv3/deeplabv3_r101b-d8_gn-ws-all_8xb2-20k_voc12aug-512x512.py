# DeepLabV3 R-101-D8 (v1b stem) on PASCAL VOC 2012 + aug, GN+WS in
# backbone, decode head (ASPP) and auxiliary head (FCN).
# 8 processes x 2 images: the same total batch (16), SGD lr 0.01 and
# 20k-iteration poly schedule as mmseg's stock 4xb4 config (with another
# total batch B use lr = 0.01 * B / 16). Crop 512x512.
_base_ = './deeplabv3_r50b-d8_gn-ws-all_8xb2-20k_voc12aug-512x512.py'

# ImageNet-pretrained GN+WS ResNet-101 of the WS authors (JHU), the weights
# of mmdet's gn+ws configs, WS variant 'A' (ConvWS default).
model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='open-mmlab://jhu/resnet101_gn_ws')))
