"""WS and BCN in mmpretrain: layers, optimizer, init, norm_eval, the
authors' ImageNet files evaluated as classifiers, and classifier checkpoints
carried into detection. mmpretrain runs in .venv-oldest (make test-oldest):
torchvision, which it imports, has no CPU build for the torch of .venv."""
import math
import re
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import load_checkpoint

import devkit
import ws_mm  # noqa: F401  (registers ConvWS and BCN)
from references import AuthorsResNet, randomize
from ws_mm.layers import WS_CONVS, BatchChannelNorm
from ws_mm.toolbox.checks import ConfigError
from ws_mm.toolbox.launch import prepare

pytest.importorskip(
    'mmpretrain.models', exc_type=ImportError,
    reason='mmpretrain runs in .venv-oldest (make test-oldest): it imports '
    "torchvision, which has no CPU build for .venv's torch")
from mmpretrain.registry import MODELS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WS = dict(type='ConvWS')
GN = dict(type='GN', num_groups=32, requires_grad=True)


def bcn(mode='batch'):
    return dict(type='BCN', num_groups=32, mode=mode, requires_grad=True)


def build(cfg):
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(cfg)


def classifier(depth=18, conv_cfg=WS, norm_cfg=GN, num_classes=5, **backbone):
    return build(dict(
        type='ImageClassifier',
        backbone=dict(type='ResNet', depth=depth, conv_cfg=conv_cfg,
                      norm_cfg=norm_cfg, **backbone),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=num_classes,
                  in_channels=512 if depth < 50 else 2048)))


def table2_config(name):
    """The Table 2 config of configs/resnet/ whose name starts so."""
    found = sorted((ROOT / 'configs' / 'resnet').glob(f'{name}_*.py'))
    assert len(found) == 1, (name, found)
    return found[0]


# --------------------------------------------------------------------------
# The layers in mmpretrain's ResNet

@pytest.mark.parametrize('norm_cfg,norm', [(GN, torch.nn.GroupNorm),
                                           (bcn(), BatchChannelNorm)])
def test_ws_and_bcn_resolve_in_mmpretrain_and_kaiming_reaches_ws(norm_cfg,
                                                                 norm):
    torch.manual_seed(0)
    model = classifier(norm_cfg=norm_cfg)
    backbone = model.backbone
    convs = [m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(isinstance(m, WS_CONVS) for m in convs)
    assert sum(isinstance(m, norm) for m in backbone.modules()) == 1 + 8 * 2 \
        + 3  # stem, two per basic block, three downsamples
    model.init_weights()
    # mmpretrain's Kaiming init (fan_out, normal): std sqrt(2 / fan_out),
    # 2.4x torch's default for a 3x3 conv; 36864 samples pin it to ~1%
    conv = backbone.layer1[0].conv1
    fan_out = conv.out_channels * math.prod(conv.kernel_size)
    assert conv.weight.std().item() == pytest.approx(
        math.sqrt(2 / fan_out), rel=0.03)


def test_the_optimizer_holds_every_bcn_and_gn_parameter():
    cfg = Config.fromfile(str(table2_config('resnet50_bcn-ws')))
    model = build(cfg.model)
    from mmengine.optim import build_optim_wrapper
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    held = {id(p) for group in wrapper.optimizer.param_groups
            for p in group['params']}
    trainable = {name: p for name, p in model.named_parameters()
                 if p.requires_grad}
    assert {n for n, p in trainable.items() if id(p) not in held} == set()
    bcn_affines = [n for n in trainable if re.search(
        r'(bcn\d|downsample\.1)\.(weight|bias)$', n)]
    # the group affine of each BCN: stem, 16 blocks x 3, 4 downsamples
    assert len(bcn_affines) == 2 * (1 + 16 * 3 + 4)
    # weight decay on every parameter, as the authors' optim.SGD
    groups = wrapper.optimizer.param_groups
    decays = {group['weight_decay'] for group in groups}
    assert decays == {1e-4}


def test_zero_init_residual_with_bcn_still_learns():
    torch.manual_seed(0)
    model = classifier(norm_cfg=bcn(), zero_init_residual=True)
    model.init_weights()
    last = model.backbone.layer1[0].bcn2  # the basic block's last norm
    assert torch.all(last.weight == 0) and torch.all(last.bias == 0)
    assert torch.all(last.pbn.weight == 1)  # the branch still gets gradient
    x = torch.randn(4, 3, 64, 64)
    loss = model.head.loss(model.extract_feat(x), [
        _sample(label) for label in (0, 1, 2, 3)])['loss']
    loss.backward()
    assert last.weight.grad.abs().sum() > 0


def _sample(label):
    from mmpretrain.structures import DataSample
    return DataSample().set_gt_label(label)


@pytest.mark.parametrize('norm_eval', [True, False])
def test_norm_eval_freezes_bcn_batch_stages_only(norm_eval):
    model = classifier(norm_cfg=bcn('batch'), norm_eval=norm_eval).backbone
    model.train()
    stage = model.layer1[0].bcn1.pbn
    assert stage.training is not norm_eval
    before = stage.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(stage.running_mean, before) is norm_eval
    # the estimate stage is not a _BatchNorm: norm_eval leaves it training
    model = classifier(norm_cfg=bcn('estimate'), norm_eval=True).backbone
    model.train()
    assert model.layer1[0].bcn1.pbn.training


# --------------------------------------------------------------------------
# The authors' ImageNet files evaluated as mmpretrain classifiers

def authors_file(tmp_path, kind, variant):
    authors = AuthorsResNet(kind, variant)
    randomize(authors)
    path = tmp_path / f'authors-{kind}.pth.tar'
    torch.save({'state_dict': {f'module.{k}': v for k, v in
                               authors.state_dict().items()}}, path)
    return authors, path


@pytest.mark.parametrize('config,kind,variant', [
    ('resnet50_gn-ws', 'gn', 'A'), ('resnet50_bcn-ws', 'bcn', 'B')])
def test_the_authors_files_evaluate_as_classifiers(tmp_path, load_tool,
                                                   config, kind, variant):
    authors, src = authors_file(tmp_path, kind, variant)
    config = table2_config(config)
    dst = tmp_path / 'classifier.pth'
    assert load_tool('convert_pretrained').main(
        [str(src), str(dst), '--config', str(config)]) == 0

    model = build(Config.fromfile(str(config)).model)
    loaded = torch.load(dst)['state_dict']
    counters = {k for k in model.state_dict() if k not in loaded}
    assert all(k.endswith('num_nonfinite_batches') for k in counters)
    load_checkpoint(model, str(dst), strict=True)  # every weight placed
    for name, value in authors.state_dict().items():
        target = name.replace('fc.', 'head.fc.') if name.startswith('fc.') \
            else 'backbone.' + re.sub(r'(^|\.)bn(\d)\.', rf'\1{kind}\2.', name)
        assert torch.equal(model.state_dict()[target], value), name

    # the logits of mmpretrain's model are the authors' (in float64)
    model.eval().double()
    authors.eval().double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x, mode='tensor'), authors(x),
                                   rtol=1e-10, atol=1e-10)


def test_a_file_that_does_not_fit_the_classifier_is_refused(tmp_path,
                                                            load_tool, capsys):
    _, src = authors_file(tmp_path, 'gn', 'A')
    config = Config.fromfile(str(table2_config('resnet101_bcn-ws')))
    config.model.head.num_classes = 10
    path = tmp_path / 'r101-bcn-10.py'
    config.dump(str(path))
    dst = tmp_path / 'never.pth'
    assert load_tool('convert_pretrained').main(
        [str(src), str(dst), '--config', str(path)]) == 1
    out = capsys.readouterr().out
    assert 'with GN layers, the model has BCN layers' in out
    assert 'a ResNet-50, the model is a ResNet-101' in out
    assert "trained with WS variant 'A' (eps 1e-05), the model " \
        "standardizes with 'B' (eps 1e-05)" in out
    assert not dst.exists()
    # depth and norm right: the head's size is named
    config = Config.fromfile(str(table2_config('resnet50_gn-ws')))
    config.model.head.num_classes = 10
    config.dump(str(path))
    assert load_tool('convert_pretrained').main(
        [str(src), str(dst), '--config', str(path)]) == 1
    assert ('shape mismatch: head.fc.weight is (1000, 2048), the model '
            'wants (10, 2048)') in capsys.readouterr().out
    assert not dst.exists()


# --------------------------------------------------------------------------
# From classification into detection and segmentation

def classifier_checkpoint(tmp_path, conv_cfg, norm_cfg):
    """What an mmpretrain run saves: the classifier's state dict and, in
    meta, its config's text."""
    model = classifier(conv_cfg=conv_cfg, norm_cfg=norm_cfg)
    model.init_weights()
    randomize(model)
    cfg = Config(dict(model=dict(type='ImageClassifier', backbone=dict(
        type='ResNet', depth=18, conv_cfg=conv_cfg, norm_cfg=norm_cfg))))
    path = tmp_path / 'classifier.pth'
    torch.save({'state_dict': model.state_dict(),
                'meta': {'cfg': cfg.pretty_text}}, path)
    return model, path


def detection_backbone(path, conv_cfg, norm_cfg, scope='mmdet'):
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    with DefaultScope.overwrite_default_scope(scope):
        backbone = registry.build(dict(
            type='ResNet', depth=18, conv_cfg=conv_cfg, norm_cfg=norm_cfg,
            norm_eval=False, init_cfg=dict(type='AuthorsPretrained',
                                           checkpoint=str(path))))
    return backbone


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
@pytest.mark.parametrize('conv_cfg,norm_cfg', [
    (WS, GN), (dict(type='ConvWS', variant='B'), bcn('estimate'))])
def test_a_classifier_checkpoint_initializes_a_backbone(tmp_path, scope,
                                                        conv_cfg, norm_cfg):
    model, path = classifier_checkpoint(tmp_path, conv_cfg, norm_cfg)
    backbone = detection_backbone(path, conv_cfg, norm_cfg, scope)
    backbone.init_weights()
    ours = backbone.state_dict()
    theirs = {k[len('backbone.'):]: v for k, v in model.state_dict().items()
              if k.startswith('backbone.')}
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key


@pytest.mark.parametrize('model_cfg,message', [
    ((WS, dict(type='BN', requires_grad=True)),
     'with GN layers, the model has BN layers'),
    ((dict(type='ConvWS', variant='B'), GN),
     "trained with WS variant 'A' (eps 1e-05), the model standardizes with "
     "'B' (eps 1e-05): set conv_cfg=dict(type='ConvWS', variant='A')"),
    ((None, GN), "the model's convs are plain: set conv_cfg=dict("
     "type='ConvWS', variant='A')"),
])
def test_a_classifier_checkpoint_that_does_not_fit_is_refused(
        tmp_path, model_cfg, message):
    _, path = classifier_checkpoint(tmp_path, WS, GN)
    backbone = detection_backbone(path, *model_cfg)
    with pytest.raises(ValueError) as error:
        backbone.init_weights()
    assert str(error.value).startswith(f'{path} does not fit ResNet:')
    assert message in str(error.value)


def test_a_plain_classifier_is_refused_by_a_ws_model(tmp_path):
    _, path = classifier_checkpoint(tmp_path, None, GN)
    backbone = detection_backbone(path, WS, GN)
    with pytest.raises(ValueError, match='trained with plain convs, the '
                       'model standardizes them: remove conv_cfg'):
        backbone.init_weights()


@pytest.mark.parametrize('option,message', [
    ('train_dataloader.dataset.data_root={tmp}/nowhere',
     "train_dataloader.dataset.data_root: dataset folder '{tmp}/nowhere' "
     'not found'),
    ('train_dataloader.dataset.data_root={tmp}/data',  # train/ is empty
     'train_dataloader.dataset: CustomDataset cannot list its samples'),
    ('model.backbone.norm_cfg.type=BCNN',
     "model.backbone.norm_cfg: unknown layer type 'BCNN'; did you mean "
     "'BCN'"),
])
def test_bad_input_stops_the_classifier_before_anything_is_written(
        tmp_path, option, message):
    (tmp_path / 'data' / 'train').mkdir(parents=True)
    work = tmp_path / 'work'
    with pytest.raises(ConfigError, match=re.escape(
            message.format(tmp=tmp_path))):
        prepare('train', [str(ROOT / devkit.DEMO_CONFIGS['mmpretrain']),
                          '--work-dir', str(work), '--cfg-options',
                          option.format(tmp=tmp_path)])
    assert not work.exists()


def test_a_backbone_file_that_does_not_fit_stops_training_before_writing(
        tmp_path, demo_data):
    _, path = classifier_checkpoint(tmp_path, dict(type='ConvWS',
                                                   variant='B'), GN)
    options = dict(devkit.demo_data_options('mmdet', demo_data.root),
                   **{'model.backbone.init_cfg.checkpoint': path})
    work = tmp_path / 'work'
    with pytest.raises(ConfigError, match=re.escape(
            f'model.backbone.init_cfg: {path} does not fit ResNet:')):
        prepare('train', [str(ROOT / devkit.DEMO_PRETRAINED_DET),
                          '--work-dir', str(work), '--cfg-options',
                          *devkit.cfg_options(options)])
    assert not work.exists()


@pytest.mark.e2e
def test_tools_test_evaluates_a_converted_authors_file(tmp_path, load_tool,
                                                       run_tool):
    """convert_pretrained --config, then tools/test.py with the Table 2
    config on an ImageNet-layout val split: its scores are the softmax of
    the authors' model on torchvision's Resize(256) + CenterCrop(224)."""
    import pickle

    from PIL import Image
    from torchvision import transforms

    authors, src = authors_file(tmp_path, 'gn', 'A')
    config = table2_config('resnet50_gn-ws')
    dst = tmp_path / 'classifier.pth'
    assert load_tool('convert_pretrained').main(
        [str(src), str(dst), '--config', str(config)]) == 0
    # 1000 class folders (mmpretrain's ImageNet checks), images in three
    val = tmp_path / 'imagenet' / 'val'
    for i in range(1000):
        (val / f'n{i:08d}').mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    paths = []
    for i, size in enumerate([(300, 260), (260, 400), (280, 280)]):
        pixels = torch.randint(0, 256, (*size, 3), generator=g)
        paths.append(val / f'n{i:08d}' / f'{i}.JPEG')
        Image.fromarray(pixels.to(torch.uint8).numpy()).save(paths[-1])

    out = tmp_path / 'predictions.pkl'
    proc = run_tool([sys.executable, 'tools/test.py', str(config), str(dst),
                     '--work-dir', str(tmp_path / 'work'), '--out', str(out),
                     '--cfg-options',
                     f'test_dataloader.dataset.data_root={tmp_path}/imagenet',
                     'test_dataloader.num_workers=0',
                     'test_dataloader.persistent_workers=False'])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'accuracy/top1' in proc.stdout + proc.stderr
    scores = torch.stack([p['pred_score'] for p in
                          pickle.loads(out.read_bytes())])

    prepare_image = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    x = torch.stack([prepare_image(Image.open(p).convert('RGB'))
                     for p in paths]).double()
    authors.eval().double()
    with torch.no_grad():
        expected = authors(x).softmax(-1)
    # the tool runs R-50 in float32, the reference in float64: rounding of
    # 50 layers, far below what a misplaced tensor or another crop changes
    assert torch.equal(scores.argmax(-1), expected.argmax(-1))
    torch.testing.assert_close(scores.double(), expected, rtol=1e-3,
                               atol=1e-4)
