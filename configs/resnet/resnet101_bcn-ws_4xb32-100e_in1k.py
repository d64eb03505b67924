# Table 2, BCN+WS row: ResNet-101 on ImageNet, the authors' protocol (see the
# base), as Batch-Channel-Normalization's imagenet/ code builds it: WS convs
# with variant B (sqrt(unbiased var + eps), its models/layers.py) and BCN
# everywhere: nn.BatchNorm2d on each GPU's 32 images (batch statistics,
# not SyncBN), then 32 groups with a per-group affine. Its resnet.py forces
# zero_init_residual: the group weight of each block's last BCN starts at 0.
_base_ = ['../_base_/table2/resnet101_4xb32-100e_in1k.py']

conv_cfg = dict(type='ConvWS', variant='B')
norm_cfg = dict(type='BCN', num_groups=32, mode='batch', requires_grad=True)
model = dict(
    backbone=dict(
        conv_cfg=conv_cfg, norm_cfg=norm_cfg, zero_init_residual=True))
