# Table 11, BCN+WS row: DeepLabV3 R-101, output stride 16, crop 513, the
# authors' protocol (see the base), as Batch-Channel-Normalization's
# DeepLabV3/deeplab.py builds it: BCN in backbone and ASPP with its
# per-channel stage on SyncBN batch statistics (PBCNorm: nn.SyncBatchNorm,
# momentum 0.1, then 32 groups with a per-group affine), WS convs with
# variant A (deeplab.py's Conv2d: std + eps). GPUs only (SyncBN).
# ImageNet weights: the authors' BCN+WS ResNet-101 (rn101-bcn-ws.pth.tar,
# named in that folder's README and loaded by deeplab.py), converted on
# load. It was trained with variant B (imagenet/models/layers.py:
# sqrt(var + eps)); deeplab.py runs it with variant A, and so does this row
# (allow_variant_change).
_base_ = ['../_base_/table11/deeplabv3_r101b-d16_8xb2-50e_voc12aug-513x513.py']

conv_cfg = dict(type='ConvWS', variant='A')
norm_cfg = dict(type='BCN', num_groups=32, mode='batch', sync_bn=True)
model = dict(
    backbone=dict(
        conv_cfg=conv_cfg,
        norm_cfg=norm_cfg,
        init_cfg=dict(
            type='AuthorsPretrained',
            checkpoint='https://cs.jhu.edu/~syqiao/BatchChannelNormalization/'
            'rn101-bcn-ws.pth.tar',
            allow_variant_change=True)),
    # deeplab.py leaves the classifier at PyTorch's default in WS rows
    decode_head=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, init_cfg=None))
