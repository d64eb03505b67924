# Table 12, BN row: TSM R-50, 8 segments, Something-Something V1, the
# protocol of the base: mmaction2's TSM as it ships, plain convs and
# nn.BatchNorm2d on each GPU's 8 videos x 8 frames, from torchvision's
# ImageNet ResNet-50 (the base's pretrained='torchvision://resnet50', loaded
# by ResNetTSM's pretrained2d path).
_base_ = ['../_base_/table12/tsm_imagenet-pretrained-r50_8xb8-1x1x8-50e_sthv1-rgb.py']

norm_cfg = dict(type='BN2d', requires_grad=True)  # mmaction's default
model = dict(backbone=dict(norm_cfg=norm_cfg))
