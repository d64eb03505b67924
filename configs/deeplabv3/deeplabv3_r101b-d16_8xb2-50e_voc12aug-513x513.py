# Table 11, BN row: DeepLabV3 R-101, output stride 16, crop 513, the
# authors' protocol (see the base). BN in backbone and ASPP with deeplab.py's
# momenta (0.05 in the backbone, 0.0003 in ASPP), synchronized over the 16
# images of a step (SyncBN: GPUs only); plain convs. ImageNet weights:
# torchvision's ResNet-101, the file deeplab.py loads
# (model_urls['resnet101']).
_base_ = ['../_base_/table11/deeplabv3_r101b-d16_8xb2-50e_voc12aug-513x513.py']

norm_cfg = dict(type='SyncBN', momentum=0.05, requires_grad=True)
head_norm_cfg = dict(type='SyncBN', momentum=0.0003, requires_grad=True)
model = dict(
    backbone=dict(
        norm_cfg=norm_cfg,
        init_cfg=dict(
            type='AuthorsPretrained',
            checkpoint='https://download.pytorch.org/models/'
            'resnet101-5d3b4d8f.pth')),
    decode_head=dict(norm_cfg=head_norm_cfg))
