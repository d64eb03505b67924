# Table 11, GN+WS row: DeepLabV3 R-101, output stride 16, crop 513, the
# authors' protocol (see the base), WS convs (variant A, std + eps as in
# deeplab.py's Conv2d) and GroupNorm(32) in backbone and ASPP; the classifier
# stays plain. ImageNet weights: the authors' GN+WS ResNet-101
# (R-101-GN-WS.pth.tar, named in chenxi116/DeepLabv3.pytorch's README and
# loaded by its deeplab.py), converted on load.
_base_ = ['../_base_/table11/deeplabv3_r101b-d16_8xb2-50e_voc12aug-513x513.py']

conv_cfg = dict(type='ConvWS', variant='A')
norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    backbone=dict(
        conv_cfg=conv_cfg,
        norm_cfg=norm_cfg,
        init_cfg=dict(
            type='AuthorsPretrained',
            checkpoint='http://cs.jhu.edu/~syqiao/WeightStandardization/'
            'R-101-GN-WS.pth.tar')),
    # deeplab.py leaves the classifier at PyTorch's default in WS rows
    decode_head=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, init_cfg=None))
