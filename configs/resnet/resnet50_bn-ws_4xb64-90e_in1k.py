# Table 2, BN+WS row: ResNet-50 on ImageNet, the authors' protocol (see the
# base), WS convs (variant A: unbiased std + eps, the WS code's layers.py)
# for the stem, every block and downsample, and the BN row's per-GPU
# nn.BatchNorm2d. The authors' code publishes no BN+WS ResNet: these are the
# GN+WS row's convs with the BN row's norm.
_base_ = ['../_base_/table2/resnet50_4xb64-90e_in1k.py']

conv_cfg = dict(type='ConvWS', variant='A')
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(backbone=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg))
