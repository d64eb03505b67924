# Table 11, GN row: DeepLabV3 R-101, output stride 16, crop 513, the
# authors' protocol (see the base), GroupNorm(32) in backbone and ASPP, plain
# convs (deeplab.py's nn.GroupNorm(num_groups, planes) branch).
# The authors publish no GN ImageNet ResNet-101 (and their resnet101() loads
# none for GN without WS), so this row starts from Detectron's, the one
# mmdet's gn/ configs use, with the Caffe-style input it was trained on (BGR,
# std 1).
_base_ = ['../_base_/table11/deeplabv3_r101b-d16_8xb2-50e_voc12aug-513x513.py']

norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    data_preprocessor=dict(
        mean=[103.530, 116.280, 123.675], std=[1.0, 1.0, 1.0],
        bgr_to_rgb=False),
    backbone=dict(
        norm_cfg=norm_cfg,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='open-mmlab://detectron/resnet101_gn')),
    decode_head=dict(norm_cfg=norm_cfg))
