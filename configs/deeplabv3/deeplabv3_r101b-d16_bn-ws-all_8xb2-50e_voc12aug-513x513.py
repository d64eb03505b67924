# Table 11, BN+WS row: DeepLabV3 R-101, output stride 16, crop 513, the
# BN row's SyncBN in backbone and ASPP with WS convs (variant A, as
# deeplab.py's Conv2d). The authors' code has no BN+WS path: the settings are
# the other rows' (configs/deeplabv3/README.md).
# The paper's BN+WS ImageNet ResNet-101 is not published (the authors'
# READMEs list GN+WS and BCN+WS weights only): put one, in the authors' or
# the toolboxes' layout, at this path (relative to where tools/train.py runs).
_base_ = ['./deeplabv3_r101b-d16_8xb2-50e_voc12aug-513x513.py']

conv_cfg = dict(type='ConvWS', variant='A')
model = dict(
    backbone=dict(
        conv_cfg=conv_cfg,
        init_cfg=dict(
            type='AuthorsPretrained',
            checkpoint='checkpoints/resnet101_bn_ws.pth')),
    # deeplab.py leaves the classifier at PyTorch's default in WS rows
    decode_head=dict(conv_cfg=conv_cfg, init_cfg=None))
