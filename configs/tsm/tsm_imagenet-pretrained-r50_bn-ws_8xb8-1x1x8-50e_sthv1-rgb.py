# Table 12, BN+WS row: the BN row's nn.BatchNorm2d with WS convs (variant A,
# as the WS code's layers.py) for the stem, every block and downsample; the
# fc stays plain.
# No BN+WS ImageNet ResNet-50 is published (the authors' READMEs list GN+WS
# and BCN+WS files only), and torchvision's BN weights were not trained
# with WS. Put one at this path (relative to where tools/train.py runs):
# the checkpoint of configs/resnet/resnet50_bn-ws_4xb64-90e_in1k.py (Table
# 2's BN+WS row, the same convs and norm) or a file in the authors' layout.
_base_ = ['../_base_/table12/tsm_imagenet-pretrained-r50_8xb8-1x1x8-50e_sthv1-rgb.py']

conv_cfg = dict(type='ConvWS', variant='A')
norm_cfg = dict(type='BN2d', requires_grad=True)
model = dict(
    backbone=dict(
        conv_cfg=conv_cfg,
        norm_cfg=norm_cfg,
        pretrained=None,
        pretrained2d=False,
        init_cfg=dict(
            type='AuthorsPretrained',
            checkpoint='checkpoints/resnet50_bn_ws.pth')))
