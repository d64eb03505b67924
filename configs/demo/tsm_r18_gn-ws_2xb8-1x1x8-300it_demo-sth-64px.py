# Laptop-sized TSM with GN+WS: a ResNet-18 TSM on 8 frames, trained from
# scratch in minutes on 2 CPU processes on the clips of
# tools/make_demo_data.py (Something-Something-style rawframes under
# data/demo/sth/: an object moving left, right, up or down), evaluated with
# top-1 (AccMetric). The clips need the frames' order to tell left from
# right, which TSM's temporal shift gives a 2D ResNet.
#   python tools/make_demo_data.py
#   bash tools/dist_train.sh \
#       configs/demo/tsm_r18_gn-ws_2xb8-1x1x8-300it_demo-sth-64px.py 2
# mmaction's TSM for Something-Something (tsm_r50 model, rawframes as its
# sthv1 configs read them, flips that swap left and right labels,
# TSMOptimWrapperConstructor with fc_lr5); what makes it small: ResNet-18,
# 64-px frames, 4 classes, 300 iterations at 8 clips per process, no
# pretrained weights. ws_mm.toolbox.action registers mmaction's ResNetTSM
# and TSMOptimWrapperConstructor with the fixes GN and BCN need.
_base_ = [
    'mmaction::_base_/models/tsm_r50.py',
    'mmaction::_base_/default_runtime.py',
]
custom_imports = dict(
    imports=['ws_mm', 'ws_mm.toolbox.action'], allow_failed_imports=False)

# tools/make_demo_data.py's MOTIONS, label = index
classes = ('left', 'right', 'up', 'down')
data_root = 'data/demo/sth'
num_segments = 8
max_iters = 300

model = dict(
    backbone=dict(
        depth=18,
        num_segments=num_segments,
        pretrained=None,  # no pretrained weights (stock: torchvision's)
        pretrained2d=False,
        conv_cfg=dict(type='ConvWS'),  # variant A, as the authors' GN+WS
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)),
    cls_head=dict(
        num_classes=len(classes),
        in_channels=512,
        num_segments=num_segments))

# Flipped clips move the other way: left (0) and right (1) swap labels, as
# mmaction's sthv2 configs map theirs.
train_pipeline = [
    dict(type='SampleFrames', clip_len=1, frame_interval=1,
         num_clips=num_segments),
    dict(type='RawFrameDecode'),
    dict(type='Flip', flip_ratio=0.5, flip_label_map={0: 1, 1: 0}),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs')
]
val_pipeline = [
    dict(type='SampleFrames', clip_len=1, frame_interval=1,
         num_clips=num_segments, test_mode=True),
    dict(type='RawFrameDecode'),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs')
]
dataset = dict(type='RawframeDataset', data_root=data_root,
               data_prefix=dict(img='rawframes'), filename_tmpl='{:05}.jpg')
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(dataset, ann_file='train.txt', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(dataset, ann_file='val.txt', pipeline=val_pipeline,
                 test_mode=True))
test_dataloader = val_dataloader
# top-1 and mean class accuracy (top-5 of 4 classes would say nothing)
val_evaluator = dict(
    type='AccMetric', metric_options=dict(top_k_accuracy=dict(topk=(1, ))))
test_evaluator = val_evaluator

# Iteration-based: 300 iterations at 2 x 8 clips (5 epochs of the 960
# training clips), evaluated and saved at the end. TSM's SGD (lr 0.01,
# momentum 0.9, weight decay 5e-4) at 4x the linear-scaling lr for its batch
# (0.01 at 64) as the demo has minutes, with a long warm-up and the gradient
# norm clipped at 5 (TSM: 20): the 5x-lr fc on a from-scratch net's large
# pooled features overshoots early otherwise.
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=100),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=100, end=max_iters),
]
optim_wrapper = dict(
    constructor='TSMOptimWrapperConstructor',
    paramwise_cfg=dict(fc_lr5=True),
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4),
    clip_grad=dict(max_norm=5, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=16)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    # the last checkpoint only (mmaction's runtime also copies the best)
    checkpoint=dict(type='CheckpointHook', by_epoch=False,
                    interval=max_iters, save_best=None))
log_processor = dict(by_epoch=False)
