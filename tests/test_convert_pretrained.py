"""The authors' checkpoints, converted offline (tools/convert_pretrained.py)
and on load (``init_cfg=dict(type='AuthorsPretrained', checkpoint=...)``).

The authors' ResNet is rebuilt the way their code builds it
(``references.AuthorsResNet``; its files put every module behind
DataParallel's ``module.``), so the tests check names AND numbers: after
conversion mmdet's ResNet computes the same features.
"""
import copy
import re
from pathlib import Path

import pytest
import torch
from mmdet.models.backbones import ResNet
from mmengine.config import Config
from mmengine.registry import DefaultScope

from references import AuthorsResNet, randomize
import ws_mm  # noqa: F401  (registers ConvWS, BCN, AuthorsPretrained)


@pytest.fixture(scope='module')
def convert_pretrained(load_tool):
    return load_tool('convert_pretrained')


@pytest.mark.parametrize('kind,variant', [('bcn', 'B'), ('gn', 'A')])
def test_converted_checkpoint_reproduces_the_authors_features(
        tmp_path, convert_pretrained, kind, variant, capsys):
    authors = AuthorsResNet(kind, variant)
    randomize(authors)
    authors.eval()
    src = tmp_path / 'authors.pth'
    state = {f'module.{k}': v for k, v in authors.state_dict().items()}
    if kind == 'bcn':
        assert 'module.layer1.0.bn1.pbn.running_mean' in state
        assert state['module.bn1.weight'].shape == (1, 32, 1)
    torch.save({'state_dict': state, 'epoch': 90}, src)

    dst = tmp_path / 'converted.pth'
    assert convert_pretrained.main([str(src), str(dst)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"its convs need conv_cfg=dict(type='ConvWS', variant='{variant}')")

    norm_cfg = (dict(type='BCN', num_groups=32) if kind == 'bcn' else
                dict(type='GN', num_groups=32))
    backbone = ResNet(depth=50, conv_cfg=dict(type='ConvWS', variant=variant),
                      norm_cfg=norm_cfg, norm_eval=False, init_cfg=None)
    backbone.load_state_dict(torch.load(dst)['state_dict'], strict=True)
    backbone.eval()
    # float64 (the float32 values upcast exactly): the same computation on
    # the same numbers, so a tolerance far below any misplaced tensor's
    # effect and far above float64 rounding.
    authors.double()
    backbone.double()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        for ours, theirs in zip(backbone(x), authors.features(x)):
            torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


def test_keys_that_cannot_be_placed_are_reported(tmp_path, capsys,
                                                 convert_pretrained):
    authors = AuthorsResNet('gn', 'A')
    state = {f'module.{k}': v for k, v in authors.state_dict().items()}
    state['module.layer1.0.bn1.estbn_moving_speed'] = torch.zeros(1)
    del state['module.layer4.2.conv3.weight']
    src, dst = tmp_path / 'authors.pth', tmp_path / 'out.pth'
    torch.save(state, src)
    assert convert_pretrained.main([str(src), str(dst)]) == 1
    out = capsys.readouterr().out
    assert 'could not place: layer1.0.gn1.estbn_moving_speed' in out
    assert 'missing in source: layer4.2.conv3.weight' in out
    assert not dst.exists()


# --------------------------------------------------------------------------
# init_cfg=dict(type='AuthorsPretrained', checkpoint=...): converted on load.

ROOT = Path(__file__).resolve().parents[1]
NORM_CFG = {'bcn': dict(type='BCN', num_groups=32),
            'gn': dict(type='GN', num_groups=32), 'bn': dict(type='BN')}


def authors_file(tmp_path, kind, variant, depth=50, prefix='module.'):
    """The authors' model with random weights and their checkpoint file."""
    authors = AuthorsResNet(kind, variant, depth)
    randomize(authors)
    state = {f'{prefix}{k}': v for k, v in authors.state_dict().items()}
    path = tmp_path / f'{kind}-r{depth}.pth.tar'
    torch.save({'state_dict': state, 'epoch': 90}, path)
    return authors, state, str(path)


def toolbox_key(key, abbr):
    """Where an authors' key belongs in the toolboxes' ResNet: no
    ``module.``; a torchvision norm slot ``bnN`` is named ``{abbr}N``."""
    parts = key.split('.')[1:] if key.startswith('module.') else key.split('.')
    return '.'.join(f'{abbr}{p[2:]}' if re.fullmatch(r'bn\d', p) else p
                    for p in parts)


def build_backbone(scope, depth, kind, variant, checkpoint, eps=None,
                   **init):
    conv_cfg = dict(type='ConvWS', variant=variant, eps=eps) if variant \
        else None
    with DefaultScope.overwrite_default_scope(scope):
        registry = __import__(f'{scope}.registry',
                              fromlist=['MODELS']).MODELS
        return registry.build(dict(
            type='ResNet', depth=depth, conv_cfg=conv_cfg,
            norm_cfg=NORM_CFG[kind], norm_eval=False,
            init_cfg=dict(type='AuthorsPretrained', checkpoint=checkpoint,
                          **init)))


def assert_loaded(backbone, state, abbr):
    """Every tensor of the file is where it belongs, and every tensor of the
    backbone came from the file but ws_mm's own count of skipped batches."""
    ours = backbone.state_dict()
    placed = set()
    for key, value in state.items():
        if '.fc.' in f'.{key}':
            continue
        target = toolbox_key(key, abbr)
        assert torch.equal(ours[target], value), (key, target)
        placed.add(target)
    for key in set(ours) - placed:
        assert key.endswith('.pbn.num_nonfinite_batches') and ours[key] == 0
    assert placed <= set(ours)


def assert_same_features(backbone, authors):
    for model in (backbone, authors):
        model.eval()  # mmdet's ResNet.train() returns None
        model.double()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        for ours, theirs in zip(backbone(x), authors.features(x)):
            torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('depth', [
    50, pytest.param(101, marks=pytest.mark.slow)])
@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
@pytest.mark.parametrize('kind,variant', [('bcn', 'B'), ('gn', 'A')])
def test_initializer_converts_the_authors_checkpoint(tmp_path, kind, variant,
                                                     scope, depth):
    authors, state, path = authors_file(tmp_path, kind, variant, depth)
    assert any(k.startswith('module.layer1.0.bn1.') for k in state)
    backbone = build_backbone(scope, depth, kind, variant, path)
    backbone.init_weights()
    assert_loaded(backbone, state, kind)
    assert_same_features(backbone, authors)


def test_torchvision_layout_and_converted_files_pass_through(tmp_path):
    # torchvision's BN ResNet: no prefix, BN in the bn slots, a classifier
    # (the keys are those of plain convs whatever the variant)
    authors, state, path = authors_file(tmp_path, 'bn', 'A', prefix='')
    backbone = build_backbone('mmdet', 50, 'bn', None, path)
    backbone.init_weights()
    assert_loaded(backbone, state, 'bn')
    # a file already in the toolboxes' layout (BCN: bcn1, layer1.0.bcn1.pbn)
    authors, state, path = authors_file(tmp_path, 'bcn', 'B')
    first = build_backbone('mmdet', 50, 'bcn', 'B', path)
    first.init_weights()
    converted = tmp_path / 'converted.pth'
    torch.save({'state_dict': first.state_dict()}, converted)
    again = build_backbone('mmseg', 50, 'bcn', 'B', str(converted))
    again.init_weights()
    assert_loaded(again, state, 'bcn')


@pytest.mark.parametrize('model,message', [
    (dict(depth=101, kind='gn', variant='A'),
     r'it holds a ResNet-50, the model is a ResNet-101'),
    (dict(depth=50, kind='bcn', variant='A'),
     r'it holds a ResNet with GN layers, the model has BCN layers'),
    (dict(depth=50, kind='gn', variant=None),
     r"the model's convs are plain: set conv_cfg=dict\(type='ConvWS', "
     r"variant='A'\)"),
    (dict(depth=50, kind='gn', variant='B'),
     r"trained with WS variant 'A' \(eps 1e-05\), the model standardizes "
     r"with 'B' \(eps 1e-05\): set conv_cfg=dict\(type='ConvWS', "
     r"variant='A'\)"),
    (dict(depth=50, kind='gn', variant='A', eps=1e-3),
     r"trained with WS variant 'A' \(eps 1e-05\), the model standardizes "
     r"with 'A' \(eps 0.001\)"),
])
def test_a_file_that_does_not_fit_is_refused(tmp_path, model, message):
    _, _, path = authors_file(tmp_path, 'gn', 'A')
    backbone = build_backbone('mmdet', model['depth'], model['kind'],
                              model['variant'], path, model.get('eps'))
    with pytest.raises(ValueError,
                       match=re.escape(path) + '(?s:.*)' + message):
        backbone.init_weights()


def test_every_mismatch_is_named_at_once(tmp_path):
    _, _, path = authors_file(tmp_path, 'gn', 'A')
    backbone = build_backbone('mmdet', 101, 'bcn', 'B', path)
    with pytest.raises(ValueError) as error:
        backbone.init_weights()
    lines = str(error.value).splitlines()
    assert lines[0] == f'{path} does not fit ResNet:'
    assert len(lines) == 4, lines
    assert 'with GN layers, the model has BCN layers' in lines[1]
    assert 'a ResNet-50, the model is a ResNet-101' in lines[2]
    assert "variant 'A' (eps 1e-05), the model standardizes with 'B'" \
        in lines[3]


def test_a_ws_variant_change_can_be_allowed(tmp_path):
    """As the authors' DeepLabV3 code runs their variant-B BCN+WS weights
    with variant-A convs."""
    _, state, path = authors_file(tmp_path, 'bcn', 'B')
    backbone = build_backbone('mmseg', 50, 'bcn', 'A', path,
                              allow_variant_change=True)
    backbone.init_weights()
    assert_loaded(backbone, state, 'bcn')


def test_a_gn_file_of_plain_convs_is_said_so(tmp_path):
    """Detectron's GN ResNets have plain convs; without a saved config a GN
    file is taken for the authors' GN+WS, unless ``convs`` says otherwise."""
    _, state, path = authors_file(tmp_path, 'gn', None)
    with pytest.raises(ValueError, match="the model's convs are plain"):
        build_backbone('mmdet', 50, 'gn', None, path).init_weights()
    backbone = build_backbone('mmdet', 50, 'gn', None, path, convs='plain')
    backbone.init_weights()
    assert_loaded(backbone, state, 'gn')
    with pytest.raises(ValueError, match="it was trained with plain convs"):
        build_backbone('mmdet', 50, 'gn', 'A', path,
                       convs='plain').init_weights()
    with pytest.raises(ValueError, match=r"convs='C2': expected 'plain' or"):
        build_backbone('mmdet', 50, 'gn', None, path,
                       convs='C2').init_weights()


def test_every_key_that_cannot_be_placed_is_reported(tmp_path):
    authors = AuthorsResNet('gn', 'A')
    state = {f'module.{k}': v for k, v in authors.state_dict().items()}
    state['module.layer1.0.bn1.estbn_moving_speed'] = torch.zeros(1)
    state['module.layer2.0.bn2.weight'] = torch.ones(7)
    del state['module.layer4.2.conv3.weight']
    path = tmp_path / 'authors.pth'
    torch.save(state, path)  # a bare state dict, as the authors publish
    backbone = build_backbone('mmdet', 50, 'gn', 'A', str(path))
    with pytest.raises(ValueError) as error:
        backbone.init_weights()
    lines = str(error.value).splitlines()
    assert lines[0] == f'{path} does not fit ResNet:'
    assert sorted(line.strip() for line in lines[1:]) == sorted([
        'could not place: layer1.0.gn1.estbn_moving_speed',
        'missing in the file: layer4.2.conv3.weight',
        'shape mismatch: layer2.0.gn2.weight is (7,), the model wants '
        '(128,)'])


def test_not_a_state_dict_is_refused(tmp_path):
    path = tmp_path / 'list.pth'
    torch.save([torch.zeros(1)], path)
    backbone = build_backbone('mmdet', 50, 'gn', 'A', str(path))
    with pytest.raises(ValueError, match='expected a state dict of tensors'):
        backbone.init_weights()


@pytest.mark.parametrize('config,kind,variant,depth', [
    ('mask_rcnn/mask-rcnn_r50_fpn_bcn-ws-all_8xb2-2x_coco.py', 'bcn', 'B',
     50),
    ('deeplabv3/deeplabv3_r101b-d16_bcn-ws-all_8xb2-50e_voc12aug-513x513.py',
     'bcn', 'B', 101),
    ('deeplabv3/deeplabv3_r101b-d16_gn-ws-all_8xb2-50e_voc12aug-513x513.py',
     'gn', 'A', 101),
])
def test_configs_load_the_authors_weights(tmp_path, config, kind, variant,
                                          depth):
    """The whole model's init_weights() (the Runner's path) puts the file's
    tensors into the backbone; only the file name is the test's."""
    cfg = Config.fromfile(str(ROOT / 'configs' / config))
    init = cfg.model.backbone.init_cfg
    assert init.type == 'AuthorsPretrained'
    assert init.checkpoint.startswith('http')
    _, state, path = authors_file(tmp_path, kind, variant, depth)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.init_cfg.checkpoint = path
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        registry = __import__(f'{cfg.default_scope}.registry',
                              fromlist=['MODELS']).MODELS
        model = registry.build(model_cfg)
    model.init_weights()
    assert_loaded(model.backbone, state, kind)
