# The authors' ImageNet protocol (the paper's Table 2) without the
# normalization: each row in configs/resnet/ sets conv_cfg / norm_cfg (and
# zero_init_residual for BCN+WS). Read from joe-siyuan-qiao/pytorch-
# classification (imagenet.py, models/imagenet/resnet.py; the WS code) and
# Batch-Channel-Normalization/imagenet/ (the BCN code, the same recipe). R-50
# command: `imagenet.py -a l_resnet50 --epochs 90 --schedule 30 60 --gamma
# 0.1 --gpu-id 0,1,2,3`. What differs from that code, and why:
# configs/resnet/README.md.
_base_ = [
    'mmpretrain::_base_/models/resnet50.py',
    'mmpretrain::_base_/datasets/imagenet_bs64.py',
    'mmpretrain::_base_/schedules/imagenet_bs256.py',
    'mmpretrain::_base_/default_runtime.py',
    '../ws_mm_imports.py',
]

model = dict(
    # torchvision's ResNet (mmpretrain's defaults: 7x7 stem, stride on the
    # 3x3 conv, Kaiming fan_out normal for convs, norms at 1 / 0).
    # No zero init of the last norm of a block: resnet.py's default
    # zero_init_residual=False (the BCN+WS rows set True, as their code
    # forces). norm_eval=False: BN (and BCN's BN stage) train on batch
    # statistics, as in the authors' train().
    backbone=dict(zero_init_residual=False, norm_eval=False),
    # nn.Linear(2048, 1000) at PyTorch's default init, not mmpretrain's
    # N(0, 0.01): init_cfg=None leaves the layer as torch built it.
    head=dict(init_cfg=None))

# torchvision with PIL: PIL decodes (no EXIF rotation, as ImageFolder's
# loader) and PIL resizes (bilinear, antialiased), which mmcv's 'pillow'
# backend calls; mmpretrain's default is OpenCV.
load_image = dict(
    type='LoadImageFromFile',
    imdecode_backend='pillow',
    color_type='color_ignore_orientation')
# RandomSizedCrop(224) + RandomHorizontalFlip(); no other augmentation
train_pipeline = [
    load_image,
    dict(
        type='RandomResizedCrop',
        scale=224,
        backend='pillow',
        interpolation='bilinear'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
# Scale(256) (short side) + CenterCrop(224)
test_pipeline = [
    load_image,
    dict(
        type='ResizeEdge',
        scale=256,
        edge='short',
        backend='pillow',
        interpolation='bilinear'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]

# --train-batch 256 over 4 GPUs (DataParallel): 64 a GPU. imagenet.py skips
# a batch smaller than --train-batch: drop_last.
train_dataloader = dict(
    batch_size=64,
    drop_last=True,
    dataset=dict(pipeline=train_pipeline))
# --test-batch 200 over 4 GPUs (no effect on the results)
val_dataloader = dict(batch_size=50, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# SGD(model.parameters(), lr 0.1, momentum 0.9, weight_decay 1e-4):
# mmpretrain's imagenet_bs256 schedule, with decay on every parameter, no
# nesterov, no warmup; lr x 0.1 at epochs 30 and 60 of 90.
param_scheduler = dict(milestones=[30, 60])
train_cfg = dict(max_epochs=90)
auto_scale_lr = dict(base_batch_size=256)  # 4 GPUs x 64
