# The authors' DeepLabV3 protocol (the paper's Table 11) without the
# normalization: each row sets conv_cfg / norm_cfg of backbone and decode head
# and its ImageNet weights (backbone.init_cfg). Read from
# joe-siyuan-qiao/Batch-Channel-Normalization, DeepLabV3/{main,deeplab,
# pascal,utils}.py (forked from chenxi116/DeepLabv3.pytorch, whose BN and
# GN+WS rows these are). What differs from that code, and why, is listed in
# configs/deeplabv3/README.md.
_base_ = ['mmseg::_base_/default_runtime.py', '../ws_mm_imports.py']
# ASPPHeadFuse1x1: mmseg's ASPPHead with deeplab.py's 1x1 fusion conv;
# RandomLogRescale: utils.py's random scale
custom_imports = dict(
    imports=['ws_mm', 'ws_mm.toolbox.aspp_head', 'ws_mm.toolbox.transforms'],
    allow_failed_imports=False)

crop_size = (513, 513)  # --crop_size 513, for training and testing

model = dict(
    type='EncoderDecoder',
    # torchvision.transforms.Normalize with ImageNet's mean/std on RGB; the
    # crop is zero-padded after normalizing (labels with 255), and so is each
    # test image (to 513x513; the padding is cut off before scoring).
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=crop_size,
        test_cfg=dict(size=crop_size)),
    pretrained=None,
    # torchvision's ResNet-101: one 7x7 stem conv (mmseg's `ResNet`, not the
    # deep-stem ResNetV1c), stride on the 3x3 conv; output stride 16: layer4
    # has stride 1 and dilation 2, its first block dilation 1.
    backbone=dict(
        type='ResNet',
        depth=101,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        strides=(1, 2, 2, 1),
        dilations=(1, 1, 1, 2),
        contract_dilation=True,
        deep_stem=False,
        style='pytorch',
        frozen_stages=-1,
        norm_eval=False),
    # ASPP: 256 channels, 1x1 + 3x3 at rates 6/12/18 + image pooling
    # (upsampled with align_corners=True), fused by a 1x1 conv; no dropout,
    # no auxiliary head.
    decode_head=dict(
        type='ASPPHeadFuse1x1',
        in_channels=2048,
        in_index=3,
        channels=256,
        dilations=(1, 6, 12, 18),
        dropout_ratio=0,
        num_classes=21,
        align_corners=True,
        # nn.CrossEntropyLoss(ignore_index=255): the mean over labelled pixels
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
            avg_non_ignore=True),
        # The classifier (deeplab.py's conv3): weights from N(0, 2 / n),
        # n = 1 x 1 x 21 output channels, as the rows with plain convs draw
        # every conv; the WS rows leave it at PyTorch's default
        # (init_cfg=None).
        init_cfg=dict(
            type='Normal', std=(2 / 21)**0.5, override=dict(name='conv_seg'))),
    auxiliary_head=None,
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

# PASCAL VOC 2012 train + SBD ("train_aug", 10,582 images) as mmseg's
# voc_aug.py writes it: the 1,464 VOC train images with their labels in
# SegmentationClass (train.txt), the SBD images in neither VOC train nor val
# with theirs in SegmentationClassAug (aug.txt; SBD has no label for some
# VOC train images). val: the 1,449 VOC val images, one scale, no flip.
dataset_type = 'PascalVOCDataset'
data_root = 'data/VOCdevkit/VOC2012'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    # the image's own size times 2 ** u, u uniform in [-1, 1]; PIL's
    # antialiasing filter for the image, nearest for the labels
    dict(
        type='RandomLogRescale',
        ratio_range=(0.5, 2.0),
        backend='pillow',
        interpolation='lanczos'),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
dataset_train = dict(
    type=dataset_type,
    data_root=data_root,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
    ann_file='ImageSets/Segmentation/train.txt',
    pipeline=train_pipeline)
dataset_aug = dict(
    type=dataset_type,
    data_root=data_root,
    data_prefix=dict(
        img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
    ann_file='ImageSets/Segmentation/aug.txt',
    pipeline=train_pipeline)
# The same images with every label in one SegmentationClassAug, as in the
# authors' SegmentationClassAug.zip (configs/deeplabv3/README.md, Dataset):
# in a config based on a row, train_dataloader = dict(dataset=_base_.trainaug)
trainaug = dict(
    dataset_aug,
    _delete_=True,  # replaces the ConcatDataset when merged
    ann_file='ImageSets/Segmentation/trainaug.txt')
train_dataloader = dict(
    batch_size=2,  # x 8 processes: --batch_size 16
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='ConcatDataset', datasets=[dataset_train, dataset_aug]))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt',
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# SGD, lr 0.007 for every parameter (--base_lr 0.007, --last_mult 1),
# momentum 0.9, weight decay 1e-4; lr * (1 - iter / max_iter) ** 0.9 per
# iteration over 50 epochs (662 iterations an epoch at 16 images: 33,100).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.007, momentum=0.9, weight_decay=1e-4),
    clip_grad=None)
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=0,
        power=0.9,
        begin=0,
        end=50,
        by_epoch=True,
        convert_to_iter_based=True)
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=50, val_interval=50)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=True, interval=10),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
log_processor = dict(by_epoch=True)
