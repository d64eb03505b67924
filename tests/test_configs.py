"""The configs under configs/: they load, say what they are, change only the
normalization switch, build models that train one step on CPU, and find a
label for every training image of the VOC data their README prepares.

Every ``configs/**/*.py`` outside ``_base_`` is tested (a new config is picked
up by the glob). Pretrained weights are never loaded: every ``Pretrained``
init_cfg and mmseg's ``pretrained`` are cleared first, since nothing on a test
machine can download them. The one training step runs on a tiny input with
test-only cuts that leave the structure alone (fewer RoIs sampled); SyncBN
is reverted to BN for it (SyncBN needs GPUs; the structure is what is tested).
"""
import copy
import importlib.util
import re
import shutil
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import DefaultScope
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from devkit import config_diff
import ws_mm  # noqa: F401  (registers the layers)
from ws_mm.layers import WS_CONVS, BatchChannelNorm, EstimatedBatchNorm
from ws_mm.toolbox.checks import check_datasets

pytestmark = [
    pytest.mark.filterwarnings('ignore:pkg_resources is deprecated'),
    # the toolboxes' own notices, not about these configs
    pytest.mark.filterwarnings('ignore:Default ``avg_non_ignore``'),
    pytest.mark.filterwarnings('ignore:``build_loss`` would be deprecated'),
]

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / 'configs'
CONFIGS = sorted(
    p for p in CONFIG_DIR.rglob('*.py')
    if '_base_' not in p.relative_to(CONFIG_DIR).parts)
IDS = [str(p.relative_to(CONFIG_DIR)) for p in CONFIGS]
FULL_SIZE = [p for p in CONFIGS if p.parent.name != 'demo']
FULL_IDS = [str(p.relative_to(CONFIG_DIR)) for p in FULL_SIZE]
# The paper's Table 11 family: the authors' DeepLabV3 protocol.
TABLE11 = [p for p in FULL_SIZE if '-d16_' in p.name and '-50e_' in p.name]

# The submodules the GN+WS / BCN+WS switch covers, per toolbox, and the convs
# in them that stay plain on purpose (the predictors, as in mmdet's gn+ws).
SWITCHED = {
    'mmdet': ('backbone', 'neck', 'roi_head.bbox_head', 'roi_head.mask_head'),
    'mmseg': ('backbone', 'decode_head', 'auxiliary_head'),
}
PLAIN_CONVS = {'conv_logits', 'upsample', 'conv_seg'}
# The toolboxes' own configs, as their wheels ship them.
TOOLBOX_CONFIGS = {
    tb: Path(__import__(tb).__file__).parent / '.mim' / 'configs'
    for tb in ('mmdet', 'mmseg')
}
STOCK = {
    'mmdet': 'mask_rcnn/mask-rcnn_r{depth}_fpn_2x_coco.py',
    'mmseg': 'deeplabv3/deeplabv3_r{depth}-d8_4xb4-20k_voc12aug-512x512.py',
}


def test_configs_found():
    assert len(CONFIGS) >= 24, IDS
    assert {p.parent.name for p in CONFIGS} >= {'mask_rcnn', 'deeplabv3',
                                                'demo'}


@lru_cache(maxsize=None)
def _load(path):
    return Config.fromfile(str(path))


# The configs of the other toolboxes, and the tests that check them.
OTHER_SUITES = {
    'mmpretrain': 'tests/test_table2_configs.py and tests/test_classification'
                  '.py (in .venv-oldest, make test-oldest)',
    'mmaction': 'tests/test_table12_configs.py, tests/test_action.py and the '
                'video demo tests (in .venv)',
}


def other_toolbox(path):
    """'mmpretrain' (configs/resnet/, the demo classifier), 'mmaction'
    (configs/tsm/, the demo TSMs) or None."""
    text = path.read_text()
    for scope, folder in (('mmpretrain', 'resnet'), ('mmaction', 'tsm')):
        if path.parent.name == folder or f'{scope}::' in text:
            return scope
    # a variant of a config beside it (the BCN+WS demo TSM) is of its kind
    sibling = re.search(r"^_base_ = '\./([^']+)'$", text, re.MULTILINE)
    return other_toolbox(path.parent / sibling[1]) if sibling else None


def load(path):
    scope = other_toolbox(path)
    if scope:
        pytest.skip(f'{path.name} is an {scope} config: '
                    f'{OTHER_SUITES[scope]} check them')
    return copy.deepcopy(_load(path))


def toolbox(cfg):
    assert cfg.default_scope in SWITCHED, cfg.default_scope
    return cfg.default_scope


def get(cfg, dotted):
    for key in dotted.split('.'):
        cfg = cfg.get(key) if cfg is not None else None
    return cfg


def kind(path):
    """(normalization, depth) the file name says."""
    name = path.name
    norm = ('bcn-ws' if '_bcn-ws-all_' in name else
            'gn-ws' if '_gn-ws-all_' in name else
            'bn-ws' if '_bn-ws-all_' in name else
            'gn' if '_gn-all_' in name else 'bn')
    depth = int(re.search(r'_r(\d+)b?[-_]', name).group(1))
    return norm, depth


# --------------------------------------------------------------------------
# Loading, naming, pretrained weights: cheap, no model is built.


@pytest.mark.parametrize('path', CONFIGS, ids=IDS)
def test_config_says_what_it_is(path):
    cfg = load(path)
    assert 'ws_mm' in cfg.custom_imports['imports']
    assert cfg.custom_imports.get('allow_failed_imports') is False
    tb = toolbox(cfg)
    norm, depth = kind(path)
    model = cfg.model
    assert model.backbone.depth == depth

    # NxbB in the name: B images per process.
    batch = int(re.search(r'_\d+xb(\d+)-', path.name).group(1))
    assert cfg.train_dataloader.batch_size == batch

    parts = [m for m in SWITCHED[tb] if get(model, m) is not None]
    conv_cfgs = [get(model, f'{m}.conv_cfg') for m in parts]
    norm_cfgs = [get(model, f'{m}.norm_cfg') for m in parts]
    if norm.endswith('-ws'):
        # the authors' DeepLabV3 code runs every WS row with variant A
        variant = 'B' if norm == 'bcn-ws' and path not in TABLE11 else 'A'
        for conv_cfg in conv_cfgs:
            assert conv_cfg['type'] == 'ConvWS'
            assert conv_cfg.get('variant', 'A') == variant
    else:
        assert conv_cfgs == [None] * len(conv_cfgs)
    expected_norm = {'bcn-ws': 'BCN', 'gn-ws': 'GN', 'gn': 'GN'}.get(norm)
    if expected_norm:
        for norm_cfg in norm_cfgs:
            assert norm_cfg['type'] == expected_norm
            assert norm_cfg['num_groups'] == 32
    elif path in TABLE11:  # BN rows: SyncBN with the authors' momenta
        assert [n['momentum'] for n in norm_cfgs] == [0.05, 0.0003]
        assert {n['type'] for n in norm_cfgs} == {'SyncBN'}
    if norm == 'bcn-ws' and path in TABLE11:  # as the authors' DeepLabV3
        assert all(n['mode'] == 'batch' and n['sync_bn'] for n in norm_cfgs)
    elif norm == 'bcn-ws':  # the micro-batch form
        assert all(n['mode'] == 'estimate' for n in norm_cfgs)
    if norm == 'bcn-ws':
        assert model.backbone.norm_eval is False
    if tb == 'mmdet' and norm != 'bn':
        assert model.roi_head.bbox_head.type == 'Shared4Conv1FCBBoxHead'

    # Schedules: 2x / 20-23-24e (mmdet), 20k (mmseg), iterations (demo).
    if '-2x_' in path.name:
        assert cfg.train_cfg.max_epochs == 24
        assert cfg.param_scheduler[1].milestones == [16, 22]
    elif '-20-23-24e_' in path.name:
        assert cfg.train_cfg.max_epochs == 24
        assert cfg.param_scheduler[1].milestones == [20, 23]
    elif '-20k_' in path.name:
        assert cfg.train_cfg.max_iters == 20000
    elif '-50e_' in path.name:  # lr * (1 - iter / max_iter) ** 0.9
        assert cfg.train_cfg.max_epochs == 50
        [poly] = cfg.param_scheduler
        assert (poly.type, poly.power, poly.eta_min, poly.end) == (
            'PolyLR', 0.9, 0, 50)
        assert poly.by_epoch and poly.convert_to_iter_based
        assert cfg.optim_wrapper.optimizer == dict(
            type='SGD', lr=0.007, momentum=0.9, weight_decay=1e-4)
    else:
        iters = int(re.search(r'-(\d+)it_', path.name).group(1))
        assert cfg.train_cfg.type == 'IterBasedTrainLoop'
        assert cfg.train_cfg.max_iters == iters


AUTHORS_URLS = {
    'bcn-ws': 'https://cs.jhu.edu/~syqiao/BatchChannelNormalization/'
              'rn{depth}_bcn_ws.pth',
    'gn-ws': 'http://cs.jhu.edu/~syqiao/WeightStandardization/'
             'R-{depth}-GN-WS.pth.tar',
}
# Table 11: each row from the ImageNet weights the authors' DeepLabV3 loads
# (the BCN+WS file under the name their DeepLabV3 README gives).
TABLE11_WEIGHTS = {
    'bn': dict(type='AuthorsPretrained', checkpoint='https://download.pytorch'
               '.org/models/resnet101-5d3b4d8f.pth'),
    'gn': dict(type='Pretrained',
               checkpoint='open-mmlab://detectron/resnet101_gn'),
    'gn-ws': dict(type='AuthorsPretrained',
                  checkpoint=AUTHORS_URLS['gn-ws'].format(depth=101)),
    'bn-ws': dict(type='AuthorsPretrained',
                  checkpoint='checkpoints/resnet101_bn_ws.pth'),
    'bcn-ws': dict(type='AuthorsPretrained',
                   checkpoint='https://cs.jhu.edu/~syqiao/'
                   'BatchChannelNormalization/rn101-bcn-ws.pth.tar',
                   allow_variant_change=True),
}


@pytest.mark.parametrize('path', FULL_SIZE, ids=FULL_IDS)
def test_pretrained_backbone(path):
    cfg = load(path)
    tb = toolbox(cfg)
    norm, depth = kind(path)
    backbone = cfg.model.backbone
    if path in TABLE11:
        assert backbone.init_cfg == TABLE11_WEIGHTS[norm]
        assert (backbone.type, backbone.deep_stem) == ('ResNet', False)
        return
    if tb == 'mmseg' and norm == 'bn':  # stock: ResNetV1c via `pretrained`
        assert backbone.type == 'ResNetV1c'
        assert cfg.model.pretrained == f'open-mmlab://resnet{depth}_v1c'
        return
    expected = {
        'bn': f'torchvision://resnet{depth}',
        'gn': f'open-mmlab://detectron/resnet{depth}_gn',
        'gn-ws': f'open-mmlab://jhu/resnet{depth}_gn_ws',
    }.get(norm)
    if norm == 'bcn-ws':  # named by URL, converted on load
        assert backbone.init_cfg == dict(
            type='AuthorsPretrained',
            checkpoint=AUTHORS_URLS[norm].format(depth=depth))
    else:
        assert backbone.init_cfg == dict(type='Pretrained',
                                         checkpoint=expected)
    if tb == 'mmseg':
        # torchvision-style checkpoints: the v1b stem, named "r50b"/"r101b".
        assert backbone.type == 'ResNet'
        assert cfg.model.pretrained is None
        assert f'_r{depth}b-' in path.name


DEMOS = [p for p in CONFIGS
         if p.parent.name == 'demo' and not other_toolbox(p)]


@pytest.mark.parametrize('path', DEMOS, ids=lambda p: p.name)
def test_demo_is_small_and_local(path):
    cfg = load(path)
    init = cfg.model.backbone.init_cfg
    # from scratch, or (make demo-pretrain) from the demo classifier's run
    assert init is None or (
        init.type == 'AuthorsPretrained'
        and init.checkpoint.startswith('work_dirs/demo_pretrain/'))
    assert cfg.model.get('pretrained') is None
    assert cfg.train_dataloader.dataset.data_root.startswith('data/demo/')
    assert cfg.train_dataloader.num_workers <= 2
    if cfg.train_dataloader.num_workers == 0:
        assert cfg.train_dataloader.persistent_workers is False
    assert cfg.train_cfg.max_iters <= 1000
    assert cfg.train_cfg.val_interval == cfg.train_cfg.max_iters
    checkpoint = cfg.default_hooks.checkpoint
    assert checkpoint.by_epoch is False
    assert cfg.train_cfg.max_iters % checkpoint.interval == 0
    assert cfg.default_hooks.logger.interval <= 20
    if toolbox(cfg) == 'mmdet':
        assert cfg.val_evaluator.type == 'CocoMetric'
        assert set(cfg.val_evaluator.metric) == {'bbox', 'segm'}
        classes = cfg.train_dataloader.dataset.metainfo.classes
        assert cfg.val_dataloader.dataset.metainfo.classes == classes
        assert cfg.model.roi_head.bbox_head.num_classes == len(classes)
        assert cfg.model.roi_head.mask_head.num_classes == len(classes)
    else:
        assert cfg.val_evaluator.type == 'IoUMetric'
        assert cfg.train_dataloader.dataset.type == 'PascalVOCDataset'
        assert cfg.model.decode_head.num_classes == 21


def test_demo_classes_match_the_generator(load_tool):
    """The demo detection config names the generator's COCO categories."""
    classes = load_tool('make_demo_data').COCO_CLASSES
    det_demos = [p for p in DEMOS if toolbox(load(p)) == 'mmdet']
    assert det_demos
    for path in det_demos:
        assert tuple(load(path).classes) == tuple(classes), path


# --------------------------------------------------------------------------
# Nothing but the switch differs from the toolboxes' own configs.

# Keys a config may change with respect to the stock config of its toolbox.
SWITCH_KEYS = [
    r'custom_imports\..*',
    r'(conv_cfg|norm_cfg)\..*',  # the snippets' top-level variables
    r'model\.({})\.(conv_cfg|norm_cfg)\..*',
    r'model\.backbone\.init_cfg\..*',
]
EXTRA_KEYS = {
    # mmdet's GN/GN+WS switch also swaps in the 4-conv bbox head
    ('mmdet', 'gn'): [r'model\.roi_head\.bbox_head\.(type|conv_out_channels)',
                      # Detectron's GN weights want Caffe-style input
                      r'model\.data_preprocessor\.(mean|std|bgr_to_rgb)'],
    ('mmdet', 'gn-ws'): [
        r'model\.roi_head\.bbox_head\.(type|conv_out_channels)'],
    ('mmdet', 'bcn-ws'): [
        r'model\.roi_head\.bbox_head\.(type|conv_out_channels)',
        r'model\.backbone\.norm_eval'],
    # torchvision-style weights: v1b stem, `pretrained` cleared; 2 per GPU
    ('mmseg', 'gn-ws'): [r'model\.backbone\.type', r'model\.pretrained',
                         r'train_dataloader\.batch_size'],
    ('mmseg', 'bcn-ws'): [r'model\.backbone\.type', r'model\.pretrained',
                          r'train_dataloader\.batch_size'],
}


@pytest.mark.parametrize('path', [p for p in FULL_SIZE if p not in TABLE11],
                         ids=lambda p: p.name)
def test_only_the_switch_differs_from_stock(path):
    cfg = load(path)
    tb = toolbox(cfg)
    norm, depth = kind(path)
    stock = Config.fromfile(TOOLBOX_CONFIGS[tb] /
                            STOCK[tb].format(depth=depth))
    allowed = [p.format('|'.join(m.replace('.', r'\.') for m in SWITCHED[tb]))
               for p in SWITCH_KEYS] + EXTRA_KEYS.get((tb, norm), [])
    if '-20-23-24e_' in path.name:
        allowed.append(r'param_scheduler\[1\]\.milestones')
    unexpected = sorted(k for k in config_diff(stock, cfg)
                        if not any(re.fullmatch(p, k) for p in allowed))
    assert unexpected == [], f'{path.name} changes more than the switch'


@pytest.mark.parametrize('path', [p for p in FULL_SIZE if '_gn-ws-all_' in
                                  p.name and p.parent.name == 'mask_rcnn'],
                         ids=lambda p: p.name)
def test_gn_ws_equals_mmdet_gn_ws(path):
    """Our Mask R-CNN GN+WS configs are mmdet's gn+ws configs (+ ws_mm)."""
    name = path.name.replace('_8xb2-', '_')
    theirs = Config.fromfile(TOOLBOX_CONFIGS['mmdet'] / 'gn+ws' / name)
    assert config_diff(theirs, load(path)) == {
        'custom_imports.imports', 'custom_imports.allow_failed_imports',
        'max_epochs'  # a bare variable of mmdet's file
    }


# --------------------------------------------------------------------------
# Build, check the layers, one training step.


def strip_pretrained(obj):
    """Clear every Pretrained init_cfg and `pretrained` (in place)."""
    if isinstance(obj, dict):
        for key, value in list(obj.items()):
            if key == 'pretrained':
                obj[key] = None
            elif key == 'init_cfg' and _is_pretrained(value):
                obj[key] = None
            else:
                strip_pretrained(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            strip_pretrained(value)


def _is_pretrained(init_cfg):
    items = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    return any(isinstance(i, dict) and i.get('type') in (
        'Pretrained', 'AuthorsPretrained') for i in items)


def submodule(model, dotted):
    for name in dotted.split('.'):
        model = getattr(model, name)
    return model


def check_layers(model, cfg, tb):
    """The layers in each switched submodule are the ones its config asks."""
    any_ws_cfg = 'ConvWS' in cfg.pretty_text
    if not any_ws_cfg:
        assert not any(isinstance(m, WS_CONVS) for m in model.modules())
    for dotted in SWITCHED[tb]:
        sub_cfg = get(cfg.model, dotted)
        if sub_cfg is None:  # no auxiliary head
            assert not hasattr(model, dotted.split('.')[0]), dotted
            continue
        part = submodule(model, dotted)
        conv_cfg, norm_cfg = sub_cfg.get('conv_cfg'), sub_cfg.get('norm_cfg')
        convs = {n: m for n, m in part.named_modules()
                 if isinstance(m, nn.modules.conv._ConvNd)}
        ws = {n: m for n, m in convs.items() if isinstance(m, WS_CONVS)}
        if conv_cfg and conv_cfg['type'] == 'ConvWS':
            plain = {n for n in convs if n not in ws}
            assert ws, dotted
            assert all(n.split('.')[-1] in PLAIN_CONVS for n in plain), (
                dotted, sorted(plain))
            variant = conv_cfg.get('variant', 'A')
            assert {m.variant.name for m in ws.values()} == {variant}, dotted
        else:
            assert not ws, (dotted, sorted(ws))

        bcns = [m for m in part.modules() if isinstance(m, BatchChannelNorm)]
        inner = {id(m.pbn) for m in bcns}
        norms = [m for m in part.modules()
                 if isinstance(m, (nn.GroupNorm, _BatchNorm,
                                   EstimatedBatchNorm))
                 and id(m) not in inner]
        norm_type = norm_cfg['type'] if norm_cfg else None
        if norm_type == 'BCN':
            assert bcns and not norms, dotted
            assert {m.mode for m in bcns} == {norm_cfg['mode']}, dotted
            assert {m.num_groups for m in bcns} == {norm_cfg['num_groups']}
        elif norm_type == 'GN':
            assert norms and not bcns, dotted
            assert all(type(m) is nn.GroupNorm for m in norms), dotted
        elif norm_type in ('BN', 'SyncBN'):
            assert norms and not bcns, dotted
            assert all(isinstance(m, _BatchNorm) for m in norms), dotted
        else:
            assert not norms and not bcns, (dotted, norm_type)


def det_batch(size):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    inputs, samples = [], []
    boxes = torch.tensor([[8., 10., 60., 70.], [50., 40., 120., 100.]])
    for i in range(2):
        sample = DetDataSample(metainfo=dict(
            img_shape=(size, size), ori_shape=(size, size),
            scale_factor=(1., 1.)))
        masks = torch.zeros(2, size, size, dtype=torch.uint8)
        for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
            masks[k, y1:y2, x1:x2] = 1
        sample.gt_instances = InstanceData(
            bboxes=boxes.clone(), labels=torch.tensor([0, 1]),
            masks=BitmapMasks(masks.numpy(), size, size))
        inputs.append(torch.randint(0, 256, (3, size, size),
                                    dtype=torch.uint8))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def seg_batch(size):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    inputs, samples = [], []
    for i in range(2):
        sample = SegDataSample(metainfo=dict(
            img_shape=(size, size), ori_shape=(size, size),
            pad_shape=(size, size)))
        label = torch.zeros(1, size, size, dtype=torch.long)
        label[:, size // 4:size // 2, size // 4:] = 1 + i
        label[:, -4:, :] = 255  # some 'ignore' pixels, as in VOC
        sample.gt_sem_seg = PixelData(data=label)
        inputs.append(torch.randint(0, 256, (3, size, size),
                                    dtype=torch.uint8))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


@pytest.mark.parametrize('path', [
    pytest.param(p, marks=[] if p in DEMOS else pytest.mark.slow)
    for p in CONFIGS
], ids=IDS)
def test_build_and_train_one_step(path):
    cfg = load(path)
    tb = toolbox(cfg)
    model_cfg = copy.deepcopy(cfg.model)
    strip_pretrained(model_cfg)
    if tb == 'mmdet':  # test-only: fewer RoIs, same structure
        model_cfg.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=100)
        model_cfg.train_cfg.rcnn.sampler.num = 64
    else:  # pad to the tiny input instead of the 512 crop
        model_cfg.data_preprocessor.size = (64, 64)

    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(tb):
        if tb == 'mmdet':
            from mmdet.registry import MODELS
        else:
            from mmseg.registry import MODELS
        model = MODELS.build(model_cfg)
        model.init_weights()
        model = revert_sync_batchnorm(model)  # SyncBN: GPU only
        check_layers(model, cfg, tb)

        model.train()
        batch = det_batch(128) if tb == 'mmdet' else seg_batch(64)
        data = model.data_preprocessor(batch, True)
        losses = model(**data, mode='loss')
    loss = sum(v.sum() if isinstance(v, torch.Tensor) else sum(
        x.sum() for x in v) for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(loss), losses
    loss.backward()

    ws = [m for m in model.modules() if isinstance(m, WS_CONVS)]
    trainable = [m for m in ws if m.weight.requires_grad]  # not frozen
    assert bool(trainable) == bool(ws)
    for m in trainable:
        assert m.weight.grad is not None
        assert torch.isfinite(m.weight.grad).all()
    if trainable:
        assert any(m.weight.grad.abs().sum() > 0 for m in trainable)
    for m in model.modules():
        if isinstance(m, BatchChannelNorm) and m.mode == 'estimate':
            # estimates move in training only (frozen stages are in eval)
            expected = 1 if m.training else 0
            assert int(m.pbn.num_batches_tracked) == expected


# --------------------------------------------------------------------------
# Table 11: the authors' DeepLabV3 protocol, one config per row.


def test_table11_has_every_row():
    assert sorted(kind(p)[0] for p in TABLE11) == [
        'bcn-ws', 'bn', 'bn-ws', 'gn', 'gn-ws']


@pytest.mark.parametrize('path', TABLE11, ids=lambda p: p.name)
def test_table11_rows_differ_in_normalization_and_weights_only(path):
    norm, _ = kind(path)
    [bn_row] = [p for p in TABLE11 if kind(p)[0] == 'bn']
    allowed = [r'(conv_cfg|norm_cfg|head_norm_cfg)\..*',
               r'model\.(backbone|decode_head)\.(conv_cfg|norm_cfg)\..*',
               r'model\.backbone\.init_cfg\..*']
    if norm == 'gn':  # Detectron's GN weights want Caffe-style input
        allowed.append(r'model\.data_preprocessor\.(mean|std|bgr_to_rgb)')
    if norm.endswith('-ws'):  # the classifier's init, as deeplab.py's
        allowed.append(r'model\.decode_head\.init_cfg(\..*)?')
    unexpected = sorted(k for k in config_diff(load(bn_row), load(path))
                        if not any(re.fullmatch(p, k) for p in allowed))
    assert unexpected == []


@pytest.mark.parametrize('path', TABLE11, ids=lambda p: p.name)
def test_table11_protocol(path):
    """The settings of the authors' main.py / pascal.py / deeplab.py."""
    cfg = load(path)
    model = cfg.model
    assert model.data_preprocessor.size == (513, 513)
    assert model.data_preprocessor.test_cfg == dict(size=(513, 513))
    assert (model.data_preprocessor.pad_val,
            model.data_preprocessor.seg_pad_val) == (0, 255)
    train = cfg.train_dataloader
    assert train.batch_size == 2 and '_8xb2-' in path.name  # 16 in total
    # train_aug, 10,582 images, as mmseg's voc_aug.py writes it (see
    # test_every_voc_training_image_has_its_label below); the authors'
    # archive, all labels in SegmentationClassAug, one line away
    voc, sbd = train.dataset.datasets
    assert train.dataset.type == 'ConcatDataset'
    assert [(d.ann_file, d.data_prefix) for d in (voc, sbd, cfg.trainaug)] == [
        ('ImageSets/Segmentation/train.txt',
         dict(img_path='JPEGImages', seg_map_path='SegmentationClass')),
        ('ImageSets/Segmentation/aug.txt',
         dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug')),
        ('ImageSets/Segmentation/trainaug.txt',
         dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'))]
    for other in (sbd, cfg.trainaug):  # the same type, root and transforms
        assert {k: v for k, v in other.items()
                if k not in ('ann_file', 'data_prefix', '_delete_')} == {
                    k: v for k, v in voc.items()
                    if k not in ('ann_file', 'data_prefix')}
    assert cfg.trainaug._delete_ is True  # replaces the ConcatDataset
    transforms = {t.type: t for t in voc.pipeline}
    assert transforms['RandomCrop'].crop_size == (513, 513)
    assert transforms['RandomCrop'].get('cat_max_ratio', 1.0) == 1.0
    rescale = transforms['RandomLogRescale']
    assert (rescale.ratio_range, rescale.backend, rescale.interpolation) == (
        (0.5, 2.0), 'pillow', 'lanczos')
    assert 'PhotoMetricDistortion' not in transforms
    assert not any(t.type.endswith('Resize')
                   for t in cfg.val_dataloader.dataset.pipeline)
    backbone, head = model.backbone, model.decode_head
    assert backbone.strides == (1, 2, 2, 1)
    assert backbone.dilations == (1, 1, 1, 2)
    assert backbone.contract_dilation is True
    assert model.auxiliary_head is None
    assert (head.type, head.dilations, head.channels) == (
        'ASPPHeadFuse1x1', (1, 6, 12, 18), 256)
    assert head.dropout_ratio == 0 and head.align_corners is True
    assert head.loss_decode.avg_non_ignore is True


@pytest.mark.parametrize('path', TABLE11, ids=lambda p: p.name)
def test_table11_model_structure(path):
    """Output stride 16, the ASPP rates, image pooling, no auxiliary head,
    SyncBN where the row names it, WS convs where the switch puts them."""
    cfg = load(path)
    norm, _ = kind(path)
    model_cfg = copy.deepcopy(cfg.model)
    strip_pretrained(model_cfg)
    with DefaultScope.overwrite_default_scope('mmseg'):
        from mmseg.registry import MODELS
        model = MODELS.build(model_cfg)
    model.init_weights()
    synced = [m for m in model.modules() if isinstance(m, nn.SyncBatchNorm)]
    if norm in ('bn', 'bn-ws', 'bcn-ws'):
        assert synced
        if norm == 'bcn-ws':
            bcns = [m for m in model.modules()
                    if isinstance(m, BatchChannelNorm)]
            assert {type(m.pbn) for m in bcns} == {nn.SyncBatchNorm}
    else:
        assert not synced
    check_layers(model, cfg, 'mmseg')
    assert not model.with_auxiliary_head

    backbone, head = model.backbone, model.decode_head
    assert len(backbone.layer3) == 23 and hasattr(backbone, 'conv1')
    assert [b.conv2.dilation for b in backbone.layer4] == [
        (1, 1), (2, 2), (2, 2)]
    assert [m.conv.dilation for m in head.aspp_modules] == [
        (1, 1), (6, 6), (12, 12), (18, 18)]
    assert isinstance(head.image_pool[0], nn.AdaptiveAvgPool2d)
    assert head.bottleneck.conv.kernel_size == (1, 1)  # deeplab.py's conv2
    assert head.dropout is None
    # The classifier as deeplab.py's conv3 starts: PyTorch's default in the
    # WS rows (weights and bias uniform within 1 / sqrt(256)); weights from
    # N(0, 2 / 21) in the others.
    weight, bias = head.conv_seg.weight, head.conv_seg.bias
    if norm.endswith('-ws'):
        assert weight.abs().max() <= 1 / 16 and bias.abs().max() <= 1 / 16
        assert weight.std() > 0.03  # not mmseg's N(0, 0.01)
    else:
        assert abs(weight.std() / (2 / 21)**0.5 - 1) < 0.05
        assert not bias.any()
    model = revert_sync_batchnorm(model).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 64, 64))
    assert features[-1].shape[-2:] == (4, 4)  # output stride 16


# --------------------------------------------------------------------------
# The data the configs train on, laid out as configs/deeplabv3/README.md
# prepares it: mmseg's voc_aug.py writes SegmentationClassAug from SBD's
# .mat files only, and lists in trainaug.txt VOC train images SBD lacks.

VOC12 = [p for p in FULL_SIZE if '_voc12aug-' in p.name]
# A few ids of each kind, as in the real sets: VOC train (one not in SBD),
# VOC val (one of them in SBD's train), SBD train and val.
VOC_TRAIN = ['2007_000032', '2007_000039', '2007_000063']
VOC_VAL = ['2007_000033', '2007_000042']
SBD_TRAIN = ['2007_000032', '2007_000033', '2008_000002']
SBD_VAL = ['2007_000039', '2008_000003']
NOT_IN_SBD = '2007_000063'
# VOC train + SBD - VOC val, 10,582 images in the real sets
TRAIN_AUG = sorted(set(VOC_TRAIN + SBD_TRAIN + SBD_VAL) - set(VOC_VAL))
# configs/deeplabv3/README.md's line for the authors' archive
ARCHIVE_LINE = 'train_dataloader = dict(dataset=_base_.trainaug)'


@pytest.fixture(scope='module')
def voc_aug_data(tmp_path_factory):
    """A folder with data/VOCdevkit/ as the README's commands leave it:
    VOC 2012 and SBD (tiny images), then mmseg's voc_aug.py run on them.
    The converter is the toolbox's own file with two names replaced: its
    size check (AUG_LEN, 10,582) takes this set's size, and its process
    pool a loop."""
    import numpy as np
    from PIL import Image
    from scipy.io import savemat
    root = tmp_path_factory.mktemp('voc_aug')
    devkit = root / 'data' / 'VOCdevkit'
    voc, sbd = devkit / 'VOC2012', devkit / 'VOCaug' / 'dataset'
    for folder in (voc / 'JPEGImages', voc / 'SegmentationClass',
                   voc / 'ImageSets' / 'Segmentation', sbd / 'cls'):
        folder.mkdir(parents=True)
    label = np.zeros((10, 12), np.uint8)
    label[2:6, 3:9] = 1
    for name in set(VOC_TRAIN + VOC_VAL + SBD_TRAIN + SBD_VAL):
        Image.new('RGB', (12, 10)).save(voc / 'JPEGImages' / f'{name}.jpg')
    for name in VOC_TRAIN + VOC_VAL:
        Image.fromarray(label).save(voc / 'SegmentationClass' / f'{name}.png')
    for name in SBD_TRAIN + SBD_VAL:  # SBD's layout: GTcls.Segmentation
        savemat(sbd / 'cls' / f'{name}.mat', {'GTcls': {
            'Segmentation': label}})
    for folder, split, names in [
            (voc / 'ImageSets' / 'Segmentation', 'train', VOC_TRAIN),
            (voc / 'ImageSets' / 'Segmentation', 'val', VOC_VAL),
            (sbd, 'train', SBD_TRAIN), (sbd, 'val', SBD_VAL)]:
        (folder / f'{split}.txt').write_text(''.join(f'{n}\n' for n in names))

    script = (TOOLBOX_CONFIGS['mmseg'].parent / 'tools' /
              'dataset_converters' / 'voc_aug.py')
    spec = importlib.util.spec_from_file_location('voc_aug', script)
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)
    converter.AUG_LEN = len(TRAIN_AUG)
    converter.track_parallel_progress = (
        lambda func, tasks, nproc: [func(task) for task in tasks])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, 'argv', [str(script), str(devkit),
                                    str(devkit / 'VOCaug')])
        converter.main()
    written = voc / 'ImageSets' / 'Segmentation'
    assert sorted((written / 'trainaug.txt').read_text().split()) == TRAIN_AUG
    assert not (voc / 'SegmentationClassAug' / f'{NOT_IN_SBD}.png').exists()
    return root


def training_samples(dataset_cfg):
    with DefaultScope.overwrite_default_scope('mmseg'):
        from mmseg.registry import DATASETS
        dataset = DATASETS.build(copy.deepcopy(dataset_cfg))
    return [dataset.get_data_info(i) for i in range(len(dataset))]


def test_voc_configs_found():
    assert {p.parent.name for p in VOC12} == {'deeplabv3'}
    assert set(TABLE11) < set(VOC12) and len(VOC12) == 11


@pytest.mark.parametrize('path', VOC12, ids=lambda p: p.name)
def test_every_voc_training_image_has_its_label(path, voc_aug_data,
                                                monkeypatch):
    """Training would stop at the first sample without its label file."""
    cfg = load(path)
    monkeypatch.chdir(voc_aug_data)  # data_root is data/VOCdevkit/VOC2012
    samples = training_samples(cfg.train_dataloader.dataset)
    assert sorted(Path(s['img_path']).stem for s in samples) == TRAIN_AUG
    assert [s['seg_map_path'] for s in samples
            if not Path(s['seg_map_path']).is_file()] == []
    # and the check before training agrees
    check_datasets(cfg, ('train_dataloader', 'val_dataloader'))


def test_the_authors_archive_is_one_config_line_away(voc_aug_data, tmp_path,
                                                     monkeypatch):
    """With every label in SegmentationClassAug (the authors' archive
    unzipped over the converter's output), the README's line trains on
    trainaug.txt alone."""
    readme = (CONFIG_DIR / 'deeplabv3' / 'README.md').read_text()
    assert ARCHIVE_LINE in readme
    shutil.copytree(voc_aug_data / 'data', tmp_path / 'data')
    voc = tmp_path / 'data' / 'VOCdevkit' / 'VOC2012'
    shutil.copy(voc / 'SegmentationClass' / f'{NOT_IN_SBD}.png',
                voc / 'SegmentationClassAug')
    config = tmp_path / 'archive.py'
    config.write_text(f"_base_ = ['{TABLE11[0]}']\n{ARCHIVE_LINE}\n")
    cfg = Config.fromfile(str(config))
    monkeypatch.chdir(tmp_path)
    samples = training_samples(cfg.train_dataloader.dataset)
    assert sorted(Path(s['img_path']).stem for s in samples) == TRAIN_AUG
    assert {Path(s['seg_map_path']).parent.name for s in samples} == {
        'SegmentationClassAug'}
    check_datasets(cfg, ('train_dataloader', 'val_dataloader'))
    # the same transforms as the ConcatDataset's
    assert cfg.train_dataloader.dataset.pipeline == (
        load(TABLE11[0]).train_dataloader.dataset.datasets[0].pipeline)
