# DeepLabV3 R-101-D8 on PASCAL VOC 2012 + aug, BN: mmseg's stock config
# unchanged (the BN baseline). It keeps mmseg's SyncBN, the published setting
# (4 GPUs x 4 images, SGD lr 0.01, 20k iterations, crop 512): SyncBN needs
# GPUs and a distributed launch, so this config does not train on a CPU
# machine (the tools say so and stop).
# Backbone: ResNetV1c (deep stem) from open-mmlab://resnet101_v1c.
_base_ = [
    'mmseg::deeplabv3/deeplabv3_r101-d8_4xb4-20k_voc12aug-512x512.py',
    '../_base_/ws_mm_imports.py',
]
