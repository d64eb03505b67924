# Table 2, GN+WS row: ResNet-50 on ImageNet, the authors' protocol (see the
# base), as the WS code's l_resnet50 builds it: WS convs (variant A:
# unbiased std + eps, models/layers.py's Conv2d) for the stem, every block
# and downsample, and GroupNorm(32) (layers.py's BatchNorm2d). The paper
# trains GN+WS at 1 image per GPU; the code runs 64 a GPU, the same
# computation for a model without batch dependence (the WS README says so).
_base_ = ['../_base_/table2/resnet50_4xb64-90e_in1k.py']

conv_cfg = dict(type='ConvWS', variant='A')
norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(backbone=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg))
