# Laptop-sized DeepLabV3 with GN+WS, trained from scratch in a few minutes on
# 2 CPU cores on the demo data of tools/make_demo_data.py (VOC layout under
# data/demo/VOCdevkit/VOC2012), evaluated with mIoU (IoUMetric).
#   python tools/make_demo_data.py
#   python tools/train.py \
#       configs/demo/deeplabv3_r18-d16_gn-ws-all_1xb2-500it_demo-voc-256x256.py
# The GN+WS switch is the one of the full-size configs (same snippet); what
# makes it small: ResNet-18 (mmseg's V1c stem, as its r18 configs), output
# stride 16 (the paper's DeepLabV3 setting; mmseg's full-size configs use 8)
# with ASPP dilations 6/12/18, heads 128 / 64 channels wide as mmseg's r18
# configs, 256x256 crops, 500 iterations at 2 images, no pretrained weights.
# The classes are mmseg's PascalVOCDataset's 21 VOC classes, unchanged: the
# demo generator labels its shapes with the first VOC class indices.
_base_ = [
    '../_base_/switch/deeplabv3_gn-ws-all.py',
    'mmseg::_base_/datasets/pascal_voc12.py',
    'mmseg::_base_/default_runtime.py',
]

data_root = 'data/demo/VOCdevkit/VOC2012'
crop_size = (256, 256)
image_scale = (1024, 256)  # short side 256 (the demo images' long side)
max_iters = 500

data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,  # no pretrained weights (stock: resnet50_v1c)
    backbone=dict(
        depth=18,
        strides=(1, 2, 2, 1),  # output stride 16 (stock D8: (1, 2, 1, 1))
        dilations=(1, 1, 1, 2),  # (stock D8: (1, 1, 2, 4))
        init_cfg=None),
    decode_head=dict(
        in_channels=512, channels=128, dilations=(1, 6, 12, 18),
        num_classes=21),
    auxiliary_head=dict(in_channels=256, channels=64, num_classes=21))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=image_scale,
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

# Iteration-based: 500 iterations at 2 images (about 4 epochs of the 240
# training images), evaluated and saved at the end. SGD lr 0.01 with mmseg's
# poly decay, at a batch of 2 (mmseg: 0.01 at 16).
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005),
    clip_grad=None)
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-4,
        power=0.9,
        begin=0,
        end=max_iters,
        by_epoch=False)
]

# The hooks of mmseg's schedules (default_runtime has none): without
# ParamSchedulerHook the poly schedule would not step, without
# SegVisualizationHook test.py --show-dir has nothing to draw with.
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook', interval=1))
log_processor = dict(window_size=10, by_epoch=False)
