# Laptop-sized ImageNet-style pretraining: a GN+WS ResNet-18 classifier
# trained from scratch in minutes on 2 CPU cores on the object crops of
# tools/make_demo_data.py (ImageNet folder layout under data/demo/imagenet/),
# evaluated with top-1 accuracy. Its backbone then initializes the demo
# Mask R-CNN (make demo-pretrain). The GN+WS switch is the one of the Table 2
# configs (configs/resnet/); what makes it small: 64-px crops, 5 classes,
# 300 iterations at 32 images per process, no pretrained weights.
_base_ = [
    'mmpretrain::_base_/models/resnet18.py',
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/ws_mm_imports.py',
]

# the folders of data/demo/imagenet/{train,val}, in sorted order
classes = ('cross', 'disc', 'square', 'star', 'triangle')
data_root = 'data/demo/imagenet'
max_iters = 300

model = dict(
    backbone=dict(
        conv_cfg=dict(type='ConvWS'),  # variant A, as the authors' GN+WS
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        zero_init_residual=False),
    head=dict(num_classes=len(classes), topk=(1, )))

data_preprocessor = dict(
    num_classes=len(classes),
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64, crop_ratio_range=(0.5, 1.0)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
dataset = dict(type='CustomDataset', data_root=data_root,
               metainfo=dict(classes=classes))
train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(dataset, data_prefix='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(dataset, data_prefix='val', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
val_cfg = dict()
test_cfg = dict()
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=max_iters),
]
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', by_epoch=False,
                    interval=max_iters))
log_processor = dict(by_epoch=False)
