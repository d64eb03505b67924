# Laptop-sized Mask R-CNN with GN+WS, trained from scratch in a few minutes on
# 2 CPU cores on the demo data of tools/make_demo_data.py (COCO layout under
# data/demo/coco/), evaluated with box and mask mAP (CocoMetric).
#   python tools/make_demo_data.py
#   python tools/train.py \
#       configs/demo/mask-rcnn_r18_fpn_gn-ws-all_1xb2-500it_demo-coco.py
# The GN+WS switch is the one of the full-size configs (same snippet); what
# makes it small: ResNet-18, FPN and heads 64 channels wide (GN keeps 32
# groups), 256-px images, 128 sampled RoIs per image, 500 iterations at 2
# images, no pretrained weights.
_base_ = [
    '../_base_/switch/mask-rcnn_gn-ws-all.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/default_runtime.py',
]

# >>> CLASSES: the category names of data/demo/coco, in the order of their
# ids. Keep in sync with tools/make_demo_data.py (COCO_CLASSES).
classes = ('disc', 'square', 'triangle', 'star', 'cross')
# <<<

num_classes = len(classes)
data_root = 'data/demo/coco/'
image_scale = (256, 256)  # the demo images are at most 256 px: kept as is
width = 64  # channels of FPN and heads (stock: 256)
max_iters = 500

model = dict(
    backbone=dict(
        depth=18,
        frozen_stages=-1,  # trained from scratch: nothing to freeze
        init_cfg=None),  # no pretrained weights
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=dict(
            in_channels=width,
            conv_out_channels=width,
            fc_out_channels=256,
            num_classes=num_classes),
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(
            in_channels=width,
            conv_out_channels=width,
            num_classes=num_classes)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=1000, max_per_img=300)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# Iteration-based: 500 iterations at 2 images (about 4 epochs of the 240
# training images), evaluated and saved at the end. SGD lr 0.02 at a batch of
# 2 (8x the linear-scaling value of mmdet's 0.02 at 16): from-scratch GN+WS
# trains stably at this rate, and the demo has only minutes.
train_cfg = dict(
    type='IterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=50),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_iters,
        by_epoch=False,
        milestones=[400],
        gamma=0.1)
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001))
auto_scale_lr = dict(enable=False, base_batch_size=2)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters))
log_processor = dict(type='LogProcessor', window_size=10, by_epoch=False)
