"""configs/tsm/: the paper's Table 12 (TSM R-50, 8 segments,
Something-Something V1 from rawframes) as mmaction2 1.2.0 configs.

One config per row (BN, GN, BN+WS, GN+WS, BCN+WS) on one base,
configs/_base_/table12/: each states mmaction2's TSM protocol for
Something-Something V1; the rows differ from the BN row only in their
normalization and the ImageNet weights that fit it; the models they build
have the row's convs and norms, shift 8 segments, score 174 classes and
train one step on a small input; the data is read from sthv1's rawframes.
Pretrained weights are never loaded (nothing can be downloaded here).

The configs import ws_mm.toolbox.action (mmaction's ResNets and TSM's
optimizer, fixed for GN and BCN) through custom_imports.
"""
import copy
import re
from functools import lru_cache
from pathlib import Path

import pytest

pytest.importorskip(
    'mmaction',
    reason='configs/tsm/ (Table 12, video) is for mmaction2 1.2.0, which '
    'is installed in .venv only')

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.modules.batchnorm import _BatchNorm  # noqa: E402

from devkit import config_diff, plain  # noqa: E402
# before mmaction.models: ws_mm stands in for a module its wheel lacks
import ws_mm  # noqa: F401,E402
from ws_mm.layers import (WS_CONVS, BatchChannelNorm,  # noqa: E402
                          EstimatedBatchNorm)

pytestmark = pytest.mark.filterwarnings('ignore:pkg_resources is deprecated')

ACTION = 'ws_mm.toolbox.action'

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / 'configs' / 'tsm'
CONFIGS = sorted(CONFIG_DIR.glob('*.py'))
IDS = [p.name for p in CONFIGS]
NAME = re.compile(r'tsm_imagenet-pretrained-r50(?:_(?P<norm>gn|gn-ws|bn-ws|'
                  r'bcn-ws))?_(?P<gpus>\d+)xb(?P<batch>\d+)-1x1x(?P<seg>\d+)-'
                  r'(?P<epochs>\d+)e_sthv1-rgb\.py')

SEGMENTS = 8
CLASSES = 174  # Something-Something V1
BN = dict(type='BN2d', requires_grad=True)
GN = dict(type='GN', num_groups=32, requires_grad=True)
# (conv_cfg, norm_cfg) per row: WS variant A where the ImageNet weights
# were trained with it (the WS code), B for the BCN authors' files
NORMS = {
    'bn': (None, BN),
    'gn': (None, GN),
    'bn-ws': (dict(type='ConvWS', variant='A'), BN),
    'gn-ws': (dict(type='ConvWS', variant='A'), GN),
    'bcn-ws': (dict(type='ConvWS', variant='B'),
               dict(type='BCN', num_groups=32, mode='estimate',
                    momentum=0.1)),
}
# The ImageNet weights of each row (backbone init_cfg); the BN row loads
# torchvision's through ResNetTSM's own pretrained2d path.
WEIGHTS = {
    'gn': 'open-mmlab://detectron/resnet50_gn',
    'bn-ws': 'checkpoints/resnet50_bn_ws.pth',
    'gn-ws': 'http://cs.jhu.edu/~syqiao/WeightStandardization/'
             'R-50-GN-WS.pth.tar',
    'bcn-ws': 'https://cs.jhu.edu/~syqiao/BatchChannelNormalization/'
              'rn50_bcn_ws.pth',
}
# stem + 16 bottlenecks x 3 convs + 4 downsample convs, a norm each
CONVS = 1 + 3 * 16 + 4


def kind(path):
    match = NAME.fullmatch(path.name)
    assert match, path.name
    return match['norm'] or 'bn'


@lru_cache(maxsize=None)
def _load(path):
    return Config.fromfile(str(path))


def load(path):
    return copy.deepcopy(_load(path))


def test_every_row_of_table12():
    assert sorted(kind(p) for p in CONFIGS) == sorted(NORMS)


# --------------------------------------------------------------------------
# The protocol, as each config states it.

TRAIN_PIPELINE = [
    dict(type='SampleFrames', clip_len=1, frame_interval=1,
         num_clips=SEGMENTS),
    dict(type='RawFrameDecode', io_backend='disk'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='MultiScaleCrop', input_size=224,
         scales=(1, 0.875, 0.75, 0.66), random_crop=False,
         max_wh_scale_gap=1, num_fixed_crops=13),
    dict(type='Resize', scale=(224, 224), keep_ratio=False),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs'),
]
TEST_PIPELINE = [
    dict(type='SampleFrames', clip_len=1, frame_interval=1,
         num_clips=SEGMENTS, test_mode=True),
    dict(type='RawFrameDecode', io_backend='disk'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='CenterCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs'),
]
RAWFRAMES = dict(type='RawframeDataset',
                 data_prefix=dict(img='data/sthv1/rawframes'),
                 filename_tmpl='{:05}.jpg', start_index=1)


@pytest.mark.parametrize('path', CONFIGS, ids=IDS)
def test_protocol(path):
    cfg = load(path)
    assert cfg.default_scope == 'mmaction'
    assert cfg.custom_imports == dict(imports=['ws_mm', ACTION],
                                      allow_failed_imports=False)
    cfg = plain(cfg.to_dict())
    match = NAME.fullmatch(path.name)
    # 8 GPUs x 8 videos of 1x1x8 frames, 50 epochs: as the name says
    assert [int(match[k]) for k in ('gpus', 'batch', 'seg', 'epochs')] == [
        8, 8, SEGMENTS, 50]

    model = cfg['model']
    assert model['type'] == 'Recognizer2D'
    backbone = {k: v for k, v in model['backbone'].items()
                if k not in ('conv_cfg', 'norm_cfg', 'pretrained',
                             'pretrained2d', 'init_cfg')}
    assert backbone == dict(type='ResNetTSM', depth=50, norm_eval=False,
                            shift_div=8, num_segments=SEGMENTS)
    assert model['cls_head'] == dict(
        type='TSMHead', num_classes=CLASSES, num_segments=SEGMENTS,
        in_channels=2048, spatial_type='avg',
        consensus=dict(type='AvgConsensus', dim=1), dropout_ratio=0.5,
        init_std=0.001, is_shift=True, average_clips='prob')

    # no flip (sthv1's labels name left and right); 1 clip, 1 center crop
    assert cfg['train_pipeline'] == TRAIN_PIPELINE
    assert cfg['test_pipeline'] == TEST_PIPELINE
    train, val = cfg['train_dataloader'], cfg['val_dataloader']
    assert train['batch_size'] == 8
    assert train['sampler'] == dict(type='DefaultSampler', shuffle=True)
    assert train['dataset'] == dict(
        RAWFRAMES, ann_file='data/sthv1/sthv1_train_list_rawframes.txt',
        pipeline=TRAIN_PIPELINE)
    assert val['sampler'] == dict(type='DefaultSampler', shuffle=False)
    assert val['dataset'] == dict(
        RAWFRAMES, ann_file='data/sthv1/sthv1_val_list_rawframes.txt',
        pipeline=TEST_PIPELINE, test_mode=True)
    assert cfg['test_dataloader'] == val
    assert cfg['val_evaluator'] == cfg['test_evaluator'] == dict(
        type='AccMetric')

    # SGD lr 0.01 for 64 videos, wd 5e-4, TSM's groups with fc_lr5, clip 20
    assert cfg['optim_wrapper'] == dict(
        constructor='TSMOptimWrapperConstructor',
        paramwise_cfg=dict(fc_lr5=True),
        optimizer=dict(type='SGD', lr=0.01, momentum=0.9,
                       weight_decay=5e-4),
        clip_grad=dict(max_norm=20, norm_type=2))
    assert cfg['param_scheduler'] == [
        dict(type='MultiStepLR', begin=0, end=50, by_epoch=True,
             milestones=[20, 40], gamma=0.1)]
    assert cfg['train_cfg'] == dict(type='EpochBasedTrainLoop',
                                    max_epochs=50, val_begin=1,
                                    val_interval=1)
    assert cfg['auto_scale_lr'] == dict(enable=False, base_batch_size=64)


@pytest.mark.parametrize('path', CONFIGS, ids=IDS)
def test_weights_fit_the_row(path):
    """BN: torchvision's file, as mmaction ships TSM; every other row: a file
    of its own norm (and WS) through ws_mm's checked initializer, and
    mmaction's torchvision-layout load switched off."""
    norm = kind(path)
    backbone = plain(load(path).model.backbone)
    if norm == 'bn':
        assert backbone['pretrained'] == 'torchvision://resnet50'
        assert 'init_cfg' not in backbone
        assert backbone.get('pretrained2d', True) is True
        return
    assert backbone['pretrained'] is None
    assert backbone['pretrained2d'] is False
    expected = dict(type='AuthorsPretrained', checkpoint=WEIGHTS[norm])
    if norm == 'gn':  # Detectron's GN ResNet: plain convs
        expected['convs'] = 'plain'
    assert backbone['init_cfg'] == expected


@pytest.mark.parametrize('path', CONFIGS, ids=IDS)
def test_rows_differ_in_normalization_and_weights_only(path):
    norm = kind(path)
    [bn_row] = [p for p in CONFIGS if kind(p) == 'bn']
    allowed = [r'(conv_cfg|norm_cfg)\..*',
               r'model\.backbone\.(conv_cfg|norm_cfg|init_cfg)\..*',
               r'model\.backbone\.(pretrained|pretrained2d)']
    if norm == 'gn':  # Detectron's weights take Caffe-style input
        allowed.append(r'model\.data_preprocessor\.(mean|std|to_rgb)')
    changed = config_diff(load(bn_row), load(path))
    assert sorted(k for k in changed
                  if not any(re.fullmatch(p, k) for p in allowed)) == []
    conv_cfg, norm_cfg = NORMS[norm]
    cfg = plain(load(path).to_dict())
    assert cfg['model']['backbone']['norm_cfg'] == norm_cfg
    assert cfg['model']['backbone'].get('conv_cfg') == conv_cfg
    if norm == 'gn':
        assert cfg['model']['data_preprocessor'] == dict(
            type='ActionDataPreprocessor', mean=[103.53, 116.28, 123.675],
            std=[1.0, 1.0, 1.0], to_rgb=True)


# --------------------------------------------------------------------------
# The models: the row's layers, 8 segments, 174 classes, one training step.


def build(path):
    from mmaction.registry import MODELS
    init_default_scope('mmaction')
    return MODELS.build(copy.deepcopy(load(path).model))


@pytest.fixture
def one_thread():
    """One intra-op thread for a step on tiny inputs: with the 2 cores
    shared by other runs, OpenMP's thread team made it over 10x slower here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize('path', CONFIGS, ids=IDS)
def test_model(path, one_thread):
    from mmaction.models.backbones.resnet_tsm import TemporalShift
    from mmaction.structures import ActionDataSample
    norm = kind(path)
    conv_cfg, _ = NORMS[norm]
    model = build(path)
    backbone = model.backbone
    assert type(backbone).__name__ == 'ResNetTSM'
    assert type(backbone).__module__ == ACTION  # not mmaction's own
    assert backbone.num_segments == SEGMENTS

    # TSM: the first conv of every block shifts 1/8 of its channels over
    # the 8 segments
    shifts = [m for m in backbone.modules() if isinstance(m, TemporalShift)]
    assert len(shifts) == 16
    assert {(m.num_segments, m.shift_div) for m in shifts} == {(SEGMENTS, 8)}

    # Every conv is in the backbone, WS of the row's variant or plain (the
    # shifted ones too); the classifier is a plain Linear(2048, 174).
    convs = {n: m for n, m in model.named_modules()
             if isinstance(m, nn.modules.conv._ConvNd)}
    assert all(n.startswith('backbone.') for n in convs)
    assert len(convs) == CONVS
    if conv_cfg:
        assert all(isinstance(m, WS_CONVS) for m in convs.values())
        assert {m.variant.name for m in convs.values()} == {
            conv_cfg['variant']}
        assert all(isinstance(m.net, WS_CONVS) for m in shifts)
    else:
        # mmaction's ConvModule builds mmcv's nn.Conv2d wrapper
        assert not any(isinstance(m, WS_CONVS) for m in convs.values())
        assert all(isinstance(m, nn.Conv2d) for m in convs.values())
    fc = model.cls_head.fc_cls
    assert type(fc) is nn.Linear
    assert (fc.in_features, fc.out_features) == (2048, CLASSES)
    assert model.cls_head.num_segments == SEGMENTS

    # One norm after every conv, of the row's type
    bcns = [m for m in backbone.modules() if isinstance(m, BatchChannelNorm)]
    inner = {id(m.pbn) for m in bcns}
    bns = [m for m in backbone.modules()
           if isinstance(m, _BatchNorm) and id(m) not in inner]
    gns = [m for m in backbone.modules() if isinstance(m, nn.GroupNorm)]
    counts = {'bn': (CONVS, 0, 0), 'bn-ws': (CONVS, 0, 0),
              'gn': (0, CONVS, 0), 'gn-ws': (0, CONVS, 0),
              'bcn-ws': (0, 0, CONVS)}
    assert (len(bns), len(gns), len(bcns)) == counts[norm]
    assert {type(m) for m in bns} <= {nn.BatchNorm2d}
    assert all(m.num_groups == 32 for m in gns)
    assert all(m.mode == 'estimate' and m.num_groups == 32
               and isinstance(m.pbn, EstimatedBatchNorm) for m in bcns)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())

    # One training step on 2 videos of 8 small frames: the shift, the WS
    # convs and the norms run forward and backward.
    model.train()
    inputs = [torch.randint(0, 256, (SEGMENTS, 3, 32, 32), dtype=torch.uint8)
              for _ in range(2)]
    samples = [ActionDataSample().set_gt_label(label) for label in (3, 173)]
    data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples),
                                   True)
    assert tuple(data['inputs'].shape) == (2, SEGMENTS, 3, 32, 32)
    loss = model(**data, mode='loss')['loss_cls']
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in model.parameters())


@pytest.mark.parametrize('path', CONFIGS, ids=IDS)
def test_optimizer_takes_every_parameter(path):
    """The config's TSMOptimWrapperConstructor puts every parameter in
    exactly one group (BCN's group affine included), with TSM's rule for
    the fc (fc_lr5) and no decay on the norms."""
    from mmengine.optim import build_optim_wrapper
    cfg = load(path)
    model = build(path)
    optim_wrapper = build_optim_wrapper(model, copy.deepcopy(
        cfg.optim_wrapper))
    groups = optim_wrapper.optimizer.param_groups
    seen = [id(p) for g in groups for p in g['params']]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())
    group_of = {id(p): g for g in groups for p in g['params']}
    fc = model.cls_head.fc_cls
    assert group_of[id(fc.weight)]['lr'] == pytest.approx(5 * 0.01)
    assert group_of[id(fc.bias)]['lr'] == pytest.approx(10 * 0.01)
    norms = [m for m in model.modules()
             if isinstance(m, (_BatchNorm, nn.GroupNorm, BatchChannelNorm,
                               EstimatedBatchNorm))]
    for m in norms:
        for p in m.parameters(recurse=False):
            assert group_of[id(p)]['weight_decay'] == 0
    assert optim_wrapper.clip_grad_kwargs == dict(max_norm=20, norm_type=2)


@pytest.mark.parametrize('path', [p for p in CONFIGS if kind(p) != 'bn'],
                         ids=[p.name for p in CONFIGS if kind(p) != 'bn'])
def test_the_rows_weights_fit_its_backbone(path, tmp_path):
    """A file in the layout of the row's ImageNet weights (random
    values), checked against the row's backbone as training checks it:
    the authors' GN+WS (variant A) and BCN+WS (B) files, Detectron's GN
    ResNet (plain convs), an mmpretrain BN+WS classifier (Table 2's)."""
    from references import AuthorsResNet, randomize
    from ws_mm.toolbox.checks import check_pretrained_fits
    norm = kind(path)
    authors = AuthorsResNet({'bn-ws': 'bn', 'gn': 'gn', 'gn-ws': 'gn',
                             'bcn-ws': 'bcn'}[norm],
                            {'gn': None, 'bcn-ws': 'B'}.get(norm, 'A'))
    randomize(authors)
    state = {f'module.{k}': v for k, v in authors.state_dict().items()}
    if norm == 'bn-ws':  # an mmpretrain run: backbone.* and its config
        state = {f'backbone.{k}': v for k, v in authors.state_dict().items()
                 if not k.startswith('fc.')}
    file = tmp_path / 'imagenet.pth'
    meta = dict(cfg="model = dict(backbone=dict(type='ResNet', depth=50, "
                "conv_cfg=dict(type='ConvWS', variant='A')))")
    torch.save(dict(state_dict=state, **(
        dict(meta=meta) if norm == 'bn-ws' else {})), file)
    cfg = load(path)
    cfg.model.backbone.init_cfg.checkpoint = str(file)
    check_pretrained_fits(cfg)
    if norm == 'gn':  # without convs='plain', taken for the authors' GN+WS
        del cfg.model.backbone.init_cfg['convs']
        with pytest.raises(ValueError, match="model's convs are plain"):
            check_pretrained_fits(cfg)


# --------------------------------------------------------------------------
# The data: sthv1's rawframes and mmaction's file list.


def test_sthv1_rawframes(tmp_path, monkeypatch):
    """data/sthv1/rawframes/<video id>/00001.jpg ... and a list of
    ``<video id> <frames> <label>`` lines (mmaction's build_file_list.py
    writes it): 8 frames sampled per video, 224x224 crops."""
    import mmcv
    from mmaction.registry import DATASETS
    frames = tmp_path / 'data' / 'sthv1' / 'rawframes'
    videos = {'1': (37, 0), '25': (12, 173)}  # id: (frames, label)
    rng = np.random.default_rng(0)
    for vid, (count, _) in videos.items():
        for i in range(1, count + 1):  # sthv1's names start at 00001.jpg
            mmcv.imwrite(rng.integers(0, 256, (100, 176, 3), np.uint8),
                         str(frames / vid / f'{i:05}.jpg'))
    for split in ('train', 'val'):
        (tmp_path / 'data' / 'sthv1' /
         f'sthv1_{split}_list_rawframes.txt').write_text(''.join(
             f'{vid} {count} {label}\n'
             for vid, (count, label) in videos.items()))
    monkeypatch.chdir(tmp_path)
    cfg = load(CONFIGS[0])
    init_default_scope('mmaction')
    for loader in ('train_dataloader', 'test_dataloader'):
        dataset = DATASETS.build(copy.deepcopy(cfg[loader].dataset))
        assert len(dataset) == len(videos)
        for index, (vid, (count, label)) in enumerate(videos.items()):
            sample = dataset[index]
            assert tuple(sample['inputs'].shape) == (SEGMENTS, 3, 224, 224)
            assert int(sample['data_samples'].gt_label) == label
            info = dataset.get_data_info(index)
            assert Path(info['frame_dir']) == Path(
                'data/sthv1/rawframes', vid)
            assert info['total_frames'] == count
