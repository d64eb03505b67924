# DeepLabV3 R-50-D8 (v1b stem) on PASCAL VOC 2012 + aug, BCN+WS in the
# backbone, the decode head (ASPP) and the auxiliary head (FCN).
# 8 processes x 2 images: the same total batch (16), SGD lr 0.01 and
# 20k-iteration poly schedule as mmseg's stock 4xb4 config (with another
# total batch B use lr = 0.01 * B / 16). Crop 512x512.
_base_ = [
    '../_base_/switch/deeplabv3_bcn-ws-all.py',
    'mmseg::_base_/datasets/pascal_voc12_aug.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_20k.py',
]

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)

# ImageNet-pretrained BCN+WS ResNet-50 of the BCN authors (WS variant 'B';
# Batch-Channel-Normalization/imagenet/README.md), downloaded and converted
# to the mmseg ResNet's names on load.
# They are torchvision-style ResNets (one 7x7 stem conv): mmseg's stock
# ResNetV1c has a deep stem (three 3x3 convs) that they do not fit, so the
# backbone is mmseg's `ResNet` (v1b stem; hence "r50b" in the name, as in
# mmseg's r50b configs). Depth, dilations, strides and contract_dilation stay
# those of the stock R-50-D8. `pretrained` (mmseg's older way of naming the
# backbone weights, open-mmlab://resnet50_v1c in the stock model) is cleared
# so that init_cfg is the one source.
model = dict(
    data_preprocessor=data_preprocessor,  # as mmseg's stock config
    pretrained=None,
    backbone=dict(
        type='ResNet',
        init_cfg=dict(
            type='AuthorsPretrained',
            checkpoint='https://cs.jhu.edu/~syqiao/BatchChannelNormalization/'
            'rn50_bcn_ws.pth')),
    decode_head=dict(num_classes=21),  # as mmseg's stock config
    auxiliary_head=dict(num_classes=21))

# 2 images per process (mmseg's stock config: 4).
train_dataloader = dict(batch_size=2)
