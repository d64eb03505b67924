# The paper's Table 12 protocol without the normalization: TSM R-50, 8
# segments, Something-Something V1 from rawframes, as mmaction2 shipped it
# for this dataset (0.x: recognition/tsm/tsm_r50_1x1x8_50e_sthv1_rgb.py,
# the recipe of the TSM authors' README: batch 64, lr 0.01, steps 20/40, 50
# epochs, weight decay 5e-4, dropout 0.5, clip 20, no partial BN), written
# with mmaction2 1.2.0's own bases. Each row in configs/tsm/ sets conv_cfg /
# norm_cfg and the ImageNet weights its backbone starts from. What differs
# from mmaction2 and from the paper, and why: configs/tsm/README.md.
_base_ = [
    'mmaction::_base_/models/tsm_r50.py',
    'mmaction::_base_/schedules/sgd_tsm_50e.py',
    'mmaction::_base_/default_runtime.py',
    '../ws_mm_imports.py',
]
# ws_mm.toolbox.action re-registers mmaction's ResNet / ResNetTSM / ResNet3d
# and TSMOptimWrapperConstructor under their own names, fixed for GN and BCN
# (norm lookups, checked ImageNet loading, every norm parameter optimized).
custom_imports = dict(
    imports=['ws_mm', 'ws_mm.toolbox.action'], allow_failed_imports=False)

num_segments = 8  # 1x1x8: 8 segments, 1 frame each; backbone, head, sampler

# mmaction's TSM R-50 (ResNetTSM: shift 1/8 of the channels in each block's
# residual branch, norm_eval=False; TSMHead, dropout 0.5, fc N(0, 0.001))
# with BN and torchvision's ImageNet weights; 174 classes.
model = dict(
    backbone=dict(num_segments=num_segments),
    cls_head=dict(num_segments=num_segments, num_classes=174))

# Something-Something V1 ships as JPEG frames named 00001.jpg, ... (no
# videos): RawframeDataset, frames counted from 1.
dataset_type = 'RawframeDataset'
data_root = 'data/sthv1/rawframes'
ann_file_train = 'data/sthv1/sthv1_train_list_rawframes.txt'
ann_file_val = 'data/sthv1/sthv1_val_list_rawframes.txt'
file_client_args = dict(io_backend='disk')

# TSN sampling; multi-scale crop. No flip: left/right matter in this
# dataset's labels, and neither TSM's code nor mmaction's sthv1 config flips.
train_pipeline = [
    dict(
        type='SampleFrames',
        clip_len=1,
        frame_interval=1,
        num_clips=num_segments),
    dict(type='RawFrameDecode', **file_client_args),
    dict(type='Resize', scale=(-1, 256)),
    dict(
        type='MultiScaleCrop',
        input_size=224,
        scales=(1, 0.875, 0.75, 0.66),
        random_crop=False,
        max_wh_scale_gap=1,
        num_fixed_crops=13),
    dict(type='Resize', scale=(224, 224), keep_ratio=False),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs')
]
# The "efficient" test of TSM and mmaction's sthv1 config: 1 clip of 8
# frames, short side 256, one center crop 224; for validation and test.
test_pipeline = [
    dict(
        type='SampleFrames',
        clip_len=1,
        frame_interval=1,
        num_clips=num_segments,
        test_mode=True),
    dict(type='RawFrameDecode', **file_client_args),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='CenterCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs')
]
rawframes = dict(
    type=dataset_type,
    data_prefix=dict(img=data_root),
    filename_tmpl='{:05}.jpg',
    start_index=1)
train_dataloader = dict(
    batch_size=8,  # x 8 GPUs: TSM's --batch-size 64
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        **rawframes, ann_file=ann_file_train, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        **rawframes,
        ann_file=ann_file_val,
        pipeline=test_pipeline,
        test_mode=True))
test_dataloader = val_dataloader
val_evaluator = dict(type='AccMetric')  # top-1 / top-5, mean class accuracy
test_evaluator = val_evaluator

# sgd_tsm_50e: SGD lr 0.01 for 64 videos, momentum 0.9; x0.1 after epochs
# 20 and 40 of 50; gradient norm clipped at 20; TSM's parameter groups
# (fc_lr5: the fc at 5x / 10x lr; norms and biases without decay). Weight
# decay 5e-4 for Something-Something (TSM's default; mmaction's sthv1
# config), not the base's 1e-4 (Kinetics).
optim_wrapper = dict(optimizer=dict(weight_decay=5e-4))

# a checkpoint every 3 epochs and the last, the best by top-1, as mmaction
# 1.x's TSM configs keep them
default_hooks = dict(checkpoint=dict(interval=3, max_keep_ckpts=3))

# lr 0.01 is for 8 GPUs x 8 videos (--auto-scale-lr rescales it for another
# total batch)
auto_scale_lr = dict(enable=False, base_batch_size=64)
