# Table 12, GN+WS row: TSM R-50, 8 segments, Something-Something V1 (see the
# base), WS convs (variant A: unbiased std + eps, the WS code's layers.py)
# for the stem, every block and downsample, and GroupNorm(32); the fc stays
# plain. ImageNet weights: the WS authors' GN+WS ResNet-50
# (R-50-GN-WS.pth.tar, joe-siyuan-qiao/pytorch-classification), trained
# with variant A, converted to mmaction's names on load (the first conv of
# each block sits under TSM's shift wrapper).
_base_ = ['../_base_/table12/tsm_imagenet-pretrained-r50_8xb8-1x1x8-50e_sthv1-rgb.py']

conv_cfg = dict(type='ConvWS', variant='A')
norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    backbone=dict(
        conv_cfg=conv_cfg,
        norm_cfg=norm_cfg,
        pretrained=None,
        pretrained2d=False,
        init_cfg=dict(
            type='AuthorsPretrained',
            checkpoint='http://cs.jhu.edu/~syqiao/WeightStandardization/'
            'R-50-GN-WS.pth.tar')))
