# Table 12, BCN+WS row: TSM R-50, 8 segments, Something-Something V1 (see
# the base), WS convs (variant B: sqrt(unbiased var + eps), the variant the
# BCN authors' ImageNet files were trained with) and BCN everywhere, in
# ws_mm's default 'estimate' mode (the paper's text on this table could not
# be read here: configs/tsm/README.md): running estimates of the channel
# statistics, updated in training and averaged across GPUs, then 32 groups
# with a per-group affine. ImageNet weights: the BCN authors' BCN+WS
# ResNet-50 (rn50_bcn_ws.pth, Batch-Channel-Normalization/imagenet/README.md),
# converted to mmaction's names on load.
_base_ = ['../_base_/table12/tsm_imagenet-pretrained-r50_8xb8-1x1x8-50e_sthv1-rgb.py']

conv_cfg = dict(type='ConvWS', variant='B')
norm_cfg = dict(type='BCN', num_groups=32, mode='estimate', momentum=0.1)
model = dict(
    backbone=dict(
        conv_cfg=conv_cfg,
        norm_cfg=norm_cfg,
        pretrained=None,
        pretrained2d=False,
        init_cfg=dict(
            type='AuthorsPretrained',
            checkpoint='https://cs.jhu.edu/~syqiao/BatchChannelNormalization/'
            'rn50_bcn_ws.pth')))
