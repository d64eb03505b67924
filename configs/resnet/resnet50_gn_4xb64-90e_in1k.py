# Table 2, GN row: ResNet-50 on ImageNet, the authors' protocol (see the
# base), plain convs and GroupNorm(32) everywhere (the stem's 64 channels
# too). The paper trains GN at 1 image per GPU; GN has no batch dependence,
# so 64 images per GPU is the same computation (configs/resnet/README.md).
_base_ = ['../_base_/table2/resnet50_4xb64-90e_in1k.py']

norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(backbone=dict(norm_cfg=norm_cfg))
