"""configs/resnet/: the paper's Table 2 (ImageNet classification) as
mmpretrain 1.x configs, checked against the authors' classification code:
joe-siyuan-qiao/pytorch-classification (imagenet.py, models/imagenet/
resnet.py, models/layers.py; BN, GN, BN+WS, GN+WS) and
Batch-Channel-Normalization/imagenet/ (BCN+WS, the same imagenet.py).

Each config states the authors' protocol; the rows of a depth differ in
their normalization only; the models they build have the intended layers and
initialization and train one step; the data is read in ImageFolder's layout;
the transforms match torchvision's on PIL images pixel for pixel.
"""
import copy
import math
import re
from functools import lru_cache
from pathlib import Path

import pytest

pytest.importorskip(
    'mmpretrain',
    reason='configs/resnet/ (Table 2, ImageNet classification) is for '
    'mmpretrain 1.x, which is installed in .venv-oldest only: these tests '
    'run there (make test-oldest)')

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config, ConfigDict  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.modules.batchnorm import _BatchNorm  # noqa: E402

from devkit import config_diff, plain  # noqa: E402
import ws_mm  # noqa: F401,E402  (registers the layers)
from ws_mm.layers import WS_CONVS, BatchChannelNorm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / 'configs' / 'resnet'
CONFIGS = sorted(CONFIG_DIR.glob('*.py'))
IDS = [p.name for p in CONFIGS]
NAME = re.compile(r'resnet(?P<depth>50|101)(?:_(?P<norm>gn|bn-ws|gn-ws|'
                  r'bcn-ws))?_4xb(?P<batch>\d+)-(?P<epochs>\d+)e_in1k\.py')

GPUS = 4  # --gpu-id 0,1,2,3
# The two commands of the authors' READMEs: --train-batch (over 4 GPUs),
# --epochs, --schedule; --test-batch over 4 GPUs. lr 0.1 for both.
PROTOCOL = {
    50: dict(batch=64, epochs=90, milestones=[30, 60], test_batch=50),
    101: dict(batch=32, epochs=100, milestones=[30, 60, 90], test_batch=32),
}
BN = dict(type='BN', requires_grad=True)  # per GPU (DataParallel)
GN = dict(type='GN', num_groups=32, requires_grad=True)
# (conv_cfg, norm_cfg) per row: WS variant A in the WS code, B in BCN's
NORMS = {
    'bn': (None, BN),
    'gn': (None, GN),
    'bn-ws': (dict(type='ConvWS', variant='A'), BN),
    'gn-ws': (dict(type='ConvWS', variant='A'), GN),
    'bcn-ws': (dict(type='ConvWS', variant='B'),
               dict(type='BCN', num_groups=32, mode='batch',
                    requires_grad=True)),
}
LOAD = dict(type='LoadImageFromFile', imdecode_backend='pillow',
            color_type='color_ignore_orientation')
TRAIN_PIPELINE = [
    LOAD,
    dict(type='RandomResizedCrop', scale=224, backend='pillow',
         interpolation='bilinear'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
TEST_PIPELINE = [
    LOAD,
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow',
         interpolation='bilinear'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]


def kind(path):
    """(normalization, depth) the file name says."""
    match = NAME.fullmatch(path.name)
    assert match, path.name
    return match['norm'] or 'bn', int(match['depth'])


@lru_cache(maxsize=None)
def _load(path):
    return Config.fromfile(str(path))


def load(path):
    return copy.deepcopy(_load(path))


def test_every_row_of_table2():
    assert sorted(kind(p) for p in CONFIGS) == sorted(
        (norm, depth) for norm in NORMS for depth in PROTOCOL)


# --------------------------------------------------------------------------
# The protocol, as each config states it.


@pytest.mark.parametrize('path', CONFIGS, ids=IDS)
def test_protocol(path):
    cfg = ConfigDict(plain(load(path).to_dict()))
    norm, depth = kind(path)
    protocol = PROTOCOL[depth]
    match = NAME.fullmatch(path.name)
    assert (int(match['batch']), int(match['epochs'])) == (
        protocol['batch'], protocol['epochs'])
    assert cfg.default_scope == 'mmpretrain'
    assert 'ws_mm' in cfg.custom_imports['imports']
    assert cfg.custom_imports.allow_failed_imports is False

    model = cfg.model
    assert model.type == 'ImageClassifier'
    assert 'train_cfg' not in model  # no Mixup / CutMix
    conv_cfg, norm_cfg = NORMS[norm]
    backbone = model.backbone
    # Nothing else moves the ResNet off mmpretrain's defaults (torchvision's
    # layout, Kaiming fan_out init: checked on the built model below).
    assert backbone == dict(
        type='ResNet', depth=depth, num_stages=4, out_indices=(3, ),
        style='pytorch', norm_cfg=norm_cfg,
        # the BCN code forces the zero init; the WS code never does it
        zero_init_residual=norm == 'bcn-ws', norm_eval=False,
        **({'conv_cfg': conv_cfg} if conv_cfg else {}))
    assert model.neck == dict(type='GlobalAveragePooling')
    assert model.head == dict(
        type='LinearClsHead', num_classes=1000, in_channels=2048,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0), topk=(1, 5),
        init_cfg=None)  # nn.Linear's own init
    assert 'data_preprocessor' not in model
    assert cfg.data_preprocessor == dict(
        num_classes=1000, mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375], to_rgb=True)

    # SGD on every parameter, no nesterov, no warmup, no clipping
    assert cfg.optim_wrapper == dict(optimizer=dict(
        type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
    assert cfg.param_scheduler == dict(
        type='MultiStepLR', by_epoch=True, milestones=protocol['milestones'],
        gamma=0.1)
    assert cfg.train_cfg == dict(by_epoch=True,
                                 max_epochs=protocol['epochs'],
                                 val_interval=1)
    assert cfg.auto_scale_lr == dict(base_batch_size=GPUS * protocol['batch'])

    train = cfg.train_dataloader
    assert train.batch_size == protocol['batch']
    assert train.drop_last is True
    assert train.sampler == dict(type='DefaultSampler', shuffle=True)
    # ImageFolder's layout: data/imagenet/train/<class>/*
    assert train.dataset == dict(type='ImageNet', data_root='data/imagenet',
                                 split='train', pipeline=TRAIN_PIPELINE)
    val = cfg.val_dataloader
    assert val.batch_size == protocol['test_batch']
    assert val.sampler == dict(type='DefaultSampler', shuffle=False)
    assert val.dataset == dict(type='ImageNet', data_root='data/imagenet',
                               split='val', pipeline=TEST_PIPELINE)
    assert cfg.test_dataloader == val
    assert cfg.val_evaluator == dict(type='Accuracy', topk=(1, 5))
    assert cfg.test_evaluator == cfg.val_evaluator


@pytest.mark.parametrize('path', CONFIGS, ids=IDS)
def test_rows_differ_in_normalization_only(path):
    norm, depth = kind(path)
    [bn_row] = [p for p in CONFIGS if kind(p) == ('bn', depth)]
    allowed = [r'(conv_cfg|norm_cfg)\..*',
               r'model\.backbone\.(conv_cfg|norm_cfg)\..*']
    if norm == 'bcn-ws':
        allowed.append(r'model\.backbone\.zero_init_residual')
    changed = config_diff(load(bn_row), load(path))
    assert sorted(k for k in changed
                  if not any(re.fullmatch(p, k) for p in allowed)) == []


# --------------------------------------------------------------------------
# The models: layers, initialization, one training step.


def build(cfg):
    from mmpretrain.registry import MODELS
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.data_preprocessor = cfg.data_preprocessor  # as the Runner does
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(model_cfg)
    model.init_weights()
    return model


@pytest.mark.slow  # full-size, built and trained one step
@pytest.mark.parametrize('path', CONFIGS, ids=IDS)
def test_model(path):
    from mmpretrain.models.backbones.resnet import Bottleneck
    from mmpretrain.structures import DataSample
    cfg = load(path)
    norm, depth = kind(path)
    conv_cfg, _ = NORMS[norm]
    model = build(cfg)
    backbone = model.backbone

    # torchvision's ResNet: 7x7 stem, stride on the 3x3 conv
    blocks = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}[depth]
    assert [len(getattr(backbone, f'layer{i}')) for i in (1, 2, 3, 4)] == (
        blocks)
    assert (backbone.conv1.kernel_size, backbone.conv1.stride) == ((7, 7),
                                                                   (2, 2))
    first = backbone.layer2[0]
    assert (first.conv1.stride, first.conv2.stride) == ((1, 1), (2, 2))

    # Every conv is in the backbone (stem, blocks, downsample): WS of the
    # row's variant or plain; fc is a plain Linear(2048, 1000).
    convs = {n: m for n, m in model.named_modules()
             if isinstance(m, nn.modules.conv._ConvNd)}
    assert all(n.startswith('backbone.') for n in convs)
    assert len(convs) == 1 + 3 * sum(blocks) + 4
    if conv_cfg:
        assert all(isinstance(m, WS_CONVS) for m in convs.values())
        assert {m.variant.name for m in convs.values()} == {
            conv_cfg['variant']}
    else:
        assert {type(m) for m in convs.values()} == {nn.Conv2d}
    fc = model.head.fc
    assert type(fc) is nn.Linear
    assert (fc.in_features, fc.out_features) == (2048, 1000)

    # Kaiming normal, fan_out, ReLU gain, for every conv (WS too: the code
    # initializes the weight WS standardizes)
    for name, m in convs.items():
        fan_out = m.out_channels * math.prod(m.kernel_size)
        std = (2 / fan_out)**0.5
        assert abs(m.weight.std().item() / std - 1) < 0.05, name
        assert abs(m.weight.mean().item()) < 0.1 * std, name
    # nn.Linear's default: weight and bias uniform within 1 / sqrt(2048)
    # (mmpretrain's N(0, 0.01) would cross the bound and leave bias at 0)
    bound = 2048**-0.5
    assert fc.weight.abs().max() <= bound and fc.bias.abs().max() <= bound
    assert abs(fc.weight.std().item() / (bound / 3**0.5) - 1) < 0.01
    assert fc.bias.abs().min() > 0

    # One norm after every conv, of the row's type
    bcns = [m for m in model.modules() if isinstance(m, BatchChannelNorm)]
    inner = {id(m.pbn) for m in bcns}
    norms = [m for m in model.modules()
             if isinstance(m, (nn.GroupNorm, _BatchNorm)) and
             id(m) not in inner] + bcns
    assert len(norms) == len(convs)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    if norm in ('bn', 'bn-ws'):
        assert {type(m) for m in norms} == {nn.BatchNorm2d}
        assert {(m.eps, m.momentum) for m in norms} == {(1e-5, 0.1)}
    elif norm in ('gn', 'gn-ws'):
        assert {type(m) for m in norms} == {nn.GroupNorm}
        assert {(m.num_groups, m.eps) for m in norms} == {(32, 1e-5)}
    else:  # BN on each GPU's batch, then 32 groups with a per-group affine
        assert {type(m) for m in norms} == {BatchChannelNorm}
        assert {(m.mode, m.num_groups, m.eps) for m in bcns} == {
            ('batch', 32, 1e-5)}
        assert all(isinstance(m.pbn, _BatchNorm) and m.pbn.momentum == 0.1
                   for m in bcns)
        assert {tuple(m.weight.shape) for m in bcns} == {(1, 32, 1)}

    # Norms start at 1 / 0, except in BCN+WS the group weight of each
    # block's last BCN (the BCN code's nn.init.constant_(m.bn3.weight, 0));
    # its BN stage stays at 1 / 0.
    last = {id(m.norm3) for m in backbone.modules()
            if isinstance(m, Bottleneck)}
    for m in norms:
        zeroed = norm == 'bcn-ws' and id(m) in last
        assert (m.weight == (0 if zeroed else 1)).all()
        assert not m.bias.any()
        if isinstance(m, BatchChannelNorm):
            assert (m.pbn.weight == 1).all() and not m.pbn.bias.any()
    assert all(p.requires_grad for p in model.parameters())

    # One training step: batch statistics in every BN (nothing frozen)
    model.train()
    assert all(m.training for m in model.modules())
    images = [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
              for _ in range(2)]
    samples = [DataSample().set_gt_label(label) for label in (3, 999)]
    data = model.data_preprocessor(dict(inputs=images, data_samples=samples),
                                   True)
    loss = model(**data, mode='loss')['loss']
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in model.parameters())
    tracked = {int(m.num_batches_tracked) for m in model.modules()
               if isinstance(m, _BatchNorm)}
    assert tracked == (set() if norm in ('gn', 'gn-ws') else {1})


# --------------------------------------------------------------------------
# The data: ImageFolder's layout, and the transforms of torchvision on PIL
# images (the authors' Scale(256), CenterCrop(224), RandomSizedCrop(224)).


def write_jpeg(path, size=(500, 375), seed=0):
    """A JPEG of smooth shapes and noise, ``size`` = (width, height)."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // w), (y * 255 // h),
                    ((x + y) % 64) * 4], axis=-1).astype(np.int16)
    img += rng.integers(-30, 30, img.shape, dtype=np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(
        path, format='JPEG', quality=90)
    return path


def pipeline(steps):
    from mmcv.transforms import Compose
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        import mmpretrain.datasets  # noqa: F401  (registers the transforms)
        return Compose(copy.deepcopy(steps))


def test_imagenet_folder_layout(tmp_path, monkeypatch):
    """data/imagenet/{train,val}/<class>/*.JPEG, 1000 class folders, read
    without any list file; labels are the sorted folder names' indices, as
    ImageFolder's."""
    from mmpretrain.registry import DATASETS
    cfg = load(CONFIGS[0])
    root = tmp_path / 'data' / 'imagenet'
    wnids = [f'n{i:08d}' for i in range(1000)]
    for split in ('train', 'val'):
        for wnid in wnids:
            (root / split / wnid).mkdir(parents=True)
    write_jpeg(root / 'train' / wnids[0] / f'{wnids[0]}_1.JPEG', seed=1)
    write_jpeg(root / 'train' / wnids[0] / f'{wnids[0]}_2.JPEG', seed=2)
    write_jpeg(root / 'train' / wnids[999] / f'{wnids[999]}_1.JPEG', seed=3)
    write_jpeg(root / 'val' / wnids[5] / 'ILSVRC2012_val_00000001.JPEG',
               (375, 500), seed=4)
    monkeypatch.chdir(tmp_path)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        train = DATASETS.build(copy.deepcopy(cfg.train_dataloader.dataset))
        val = DATASETS.build(copy.deepcopy(cfg.val_dataloader.dataset))
    assert [(Path(train.get_data_info(i)['img_path']).name,
             train.get_data_info(i)['gt_label']) for i in range(len(train))
            ] == [(f'{wnids[0]}_1.JPEG', 0), (f'{wnids[0]}_2.JPEG', 0),
                  (f'{wnids[999]}_1.JPEG', 999)]
    assert [val.get_data_info(i)['gt_label'] for i in range(len(val))] == [5]
    for dataset in (train, val):
        sample = dataset[0]
        assert tuple(sample['inputs'].shape) == (3, 224, 224)
        assert sample['inputs'].dtype == torch.uint8


def as_rgb(packed):
    """PackInputs' (3, H, W) BGR tensor as an (H, W, 3) RGB array."""
    return packed.numpy()[::-1].transpose(1, 2, 0)


@pytest.mark.parametrize('size', [(500, 375), (333, 500)])
def test_test_pipeline_is_torchvisions(tmp_path, size):
    """Short side 256 (PIL bilinear), center crop 224: the same pixels as
    torchvision's Resize(256) + CenterCrop(224) on a PIL image."""
    transforms = pytest.importorskip('torchvision.transforms')
    path = write_jpeg(tmp_path / 'a.JPEG', size)
    ours = as_rgb(pipeline(load(CONFIGS[0]).test_pipeline)(
        dict(img_path=str(path)))['inputs'])
    theirs = transforms.Compose([transforms.Resize(256),
                                 transforms.CenterCrop(224)])(
                                     Image.open(path).convert('RGB'))
    np.testing.assert_array_equal(ours, np.asarray(theirs))


def test_train_crop_is_torchvisions(tmp_path):
    """For a crop box drawn by RandomResizedCrop: the same pixels as
    torchvision's resized_crop (PIL bilinear) of that box."""
    functional = pytest.importorskip('torchvision.transforms.functional')
    from torchvision.transforms import InterpolationMode
    path = write_jpeg(tmp_path / 'a.JPEG')
    load_step, crop_step = load(CONFIGS[0]).train_pipeline[:2]
    image = pipeline([load_step])(dict(img_path=str(path)))
    crop = pipeline([crop_step]).transforms[0]
    pil = Image.open(path).convert('RGB')
    for seed in range(4):
        np.random.seed(seed)
        top, left, height, width = crop.rand_crop_params(image['img'])
        np.random.seed(seed)
        ours = crop(copy.deepcopy(image))['img'][..., ::-1]
        theirs = functional.resized_crop(pil, top, left, height, width,
                                         [224, 224],
                                         InterpolationMode.BILINEAR)
        np.testing.assert_array_equal(ours, np.asarray(theirs))
