# Table 2, BN row: ResNet-50 on ImageNet, the authors' protocol (see the
# base), plain convs and nn.BatchNorm2d with the statistics of each GPU's
# 64 images (the authors' DataParallel; not SyncBN).
_base_ = ['../_base_/table2/resnet50_4xb64-90e_in1k.py']

norm_cfg = dict(type='BN', requires_grad=True)
model = dict(backbone=dict(norm_cfg=norm_cfg))
