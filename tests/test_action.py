"""mmaction2 with WS, GN and BCN: each failure of mmaction2 1.2.0 as it
ships, shown on mmaction's own class, and ws_mm's fix
(ws_mm/toolbox/upstream.py, ws_mm/toolbox/action.py)."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip('mmaction', reason='mmaction2 is installed in .venv')

import ws_mm.toolbox.action  # noqa: E402,F401  (the fixed classes)
from mmaction.engine.optimizers import \
    TSMOptimWrapperConstructor as MMActionTSMConstructor  # noqa: E402
from mmaction.models import backbones as mmaction_backbones  # noqa: E402
from mmaction.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from references import AuthorsResNet, randomize  # noqa: E402
from ws_mm.layers import BatchChannelNorm  # noqa: E402
from ws_mm.toolbox.checks import ConfigError, check_config  # noqa: E402
from ws_mm.toolbox.pretrained import convert, load_state_dict  # noqa: E402

GN = dict(type='GN', num_groups=32)
BCN_ESTIMATE = dict(type='BCN', num_groups=32)
BCN_BATCH = dict(type='BCN', num_groups=32, mode='batch')
BN = dict(type='BN2d', requires_grad=True)
NORMS = {'gn': GN, 'bcn': BCN_ESTIMATE}


@pytest.fixture(autouse=True)
def mmaction_scope():
    init_default_scope('mmaction')


def run_python(code, **env):
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                          capture_output=True, text=True,
                          env={**os.environ, **env})


# --------------------------------------------------------------------------
# The package as shipped

def test_mmaction_models_import_with_ws_mm_only():
    bare = run_python('import mmaction.models')
    assert 'localizers.drn' in bare.stderr, bare.stderr
    fixed = run_python('''
        import ws_mm, mmaction.models
        from mmaction.registry import MODELS
        try:
            MODELS.build(dict(type='DRN'))
        except ImportError as error:
            print(error)
    ''')
    assert fixed.returncode == 0, fixed.stderr
    assert 'DRN is missing from the mmaction2 1.2.0 package' in fixed.stdout
    assert 'mmaction2#2714' in fixed.stdout


def test_a_broken_mmpretrain_leaves_mmaction_working(tmp_path):
    """mmpretrain with a torchvision of another torch raises RuntimeError
    on import (its compiled ops do not load); mmaction and mmdet catch only
    ImportError."""
    models = tmp_path / 'mmpretrain' / 'models'
    models.mkdir(parents=True)
    (tmp_path / 'mmpretrain' / '__init__.py').write_text('')
    (models / '__init__.py').write_text(
        "raise RuntimeError('operator torchvision::nms does not exist')\n")
    path = f'{tmp_path}{os.pathsep}{os.environ.get("PYTHONPATH", "")}'
    bare = run_python('import mmaction.models', PYTHONPATH=path)
    assert 'RuntimeError: operator torchvision::nms' in bare.stderr
    fixed = run_python('''
        import ws_mm, mmaction.models
        from mmaction.registry import MODELS
        assert MODELS.get('ResNetTSM') is not None
        assert MODELS.get('MobileOneTSM') is None
    ''', PYTHONPATH=path)
    assert fixed.returncode == 0, fixed.stderr
    assert 'import mmpretrain.models failed with RuntimeError' in fixed.stderr
    assert 'install the torchvision release made for it' in fixed.stderr


# --------------------------------------------------------------------------
# TSM's optimizer

def tsm(norm_cfg, conv_cfg=dict(type='ConvWS'), **backbone):
    return MODELS.build(dict(
        type='Recognizer2D',
        backbone=dict(type='ResNetTSM', depth=50, pretrained=None,
                      pretrained2d=False, norm_cfg=norm_cfg,
                      conv_cfg=conv_cfg, **backbone),
        cls_head=dict(type='TSMHead', num_classes=174, in_channels=2048,
                      num_segments=8),
        data_preprocessor=dict(type='ActionDataPreprocessor',
                               format_shape='NCHW')))


OPTIM = dict(optim_wrapper_cfg=dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4)),
    paramwise_cfg=dict(fc_lr5=True))


def groups(constructor, model):
    return [(dict((k, v) for k, v in g.items() if k in ('lr', 'weight_decay')),
             [id(p) for p in g['params']])
            for g in constructor(model).optimizer.param_groups]


@pytest.mark.parametrize('norm_cfg,conv_cfg', [
    (BN, None), (BN, dict(type='ConvWS')), (GN, dict(type='ConvWS'))])
def test_tsm_optimizer_groups_as_mmaction_where_it_works(norm_cfg, conv_cfg):
    model = tsm(norm_cfg, conv_cfg)
    ours = OPTIM_WRAPPER_CONSTRUCTORS.build(
        dict(type='TSMOptimWrapperConstructor', **OPTIM))
    assert type(ours) is not MMActionTSMConstructor
    assert groups(ours, model) == groups(MMActionTSMConstructor(**OPTIM),
                                         model)


def test_tsm_optimizer_holds_every_parameter_of_a_bcn_ws_tsm():
    model = tsm(BCN_BATCH)
    bcn = [m for m in model.modules() if isinstance(m, BatchChannelNorm)]
    group_affine = {id(p) for m in bcn for p in (m.weight, m.bias)}
    assert len(group_affine) == 106  # 53 BCN layers in R-50
    held = {i for _, ids in groups(MMActionTSMConstructor(**OPTIM), model)
            for i in ids}
    assert not group_affine & held  # mmaction's leaves them out, silently

    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(
        dict(type='TSMOptimWrapperConstructor', **OPTIM))
    for mode_model in (model, tsm(BCN_ESTIMATE)):
        found = groups(constructor, mode_model)
        ids = [i for _, group in found for i in group]
        trainable = [id(p) for p in mode_model.parameters()
                     if p.requires_grad]
        assert sorted(ids) == sorted(trainable)  # each once, none left out
        norm_group = {i for hyper, group in found for i in group
                      if hyper == dict(lr=0.01, weight_decay=0)}
        bcn = [m for m in mode_model.modules()
               if isinstance(m, BatchChannelNorm)]
        assert {id(p) for m in bcn for p in m.parameters()} <= norm_group
        fc = mode_model.cls_head.fc_cls
        assert (dict(lr=0.05, weight_decay=5e-4), [id(fc.weight)]) in found
        assert (dict(lr=0.1, weight_decay=0), [id(fc.bias)]) in found
        first = mode_model.backbone.conv1.conv
        assert (dict(lr=0.01, weight_decay=5e-4), [id(first.weight)]) in found

    with pytest.raises(ValueError, match='EstimatedBatchNorm'):
        MMActionTSMConstructor(**OPTIM)(tsm(BCN_ESTIMATE))


# --------------------------------------------------------------------------
# The backbones

def backbone(cls_name, norm_cfg, mmaction=False, **kwargs):
    kwargs.setdefault('pretrained', None)
    kwargs.setdefault('conv_cfg', dict(type='ConvWS'))
    if cls_name == 'ResNetTSM':
        kwargs.setdefault('pretrained2d', False)
    cfg = dict(depth=50, norm_cfg=norm_cfg, **kwargs)
    if mmaction:
        return getattr(mmaction_backbones, cls_name)(**cfg)
    return MODELS.build(dict(type=cls_name, **cfg))


@pytest.mark.parametrize('cls_name', ['ResNet', 'ResNetTSM'])
@pytest.mark.parametrize('norm', ['gn', 'bcn'])
def test_frozen_stages_freeze_under_gn_and_bcn(cls_name, norm):
    with pytest.raises(AttributeError, match="no attribute 'bn'"):
        backbone(cls_name, NORMS[norm], mmaction=True, frozen_stages=1).train()
    model = backbone(cls_name, NORMS[norm], frozen_stages=1)
    model.train()
    for part in (model.conv1, model.layer1):
        assert not any(p.requires_grad for p in part.parameters())
    assert not any(m.training for m in model.conv1.norm.modules())
    assert not any(m.training for m in model.layer1.modules())
    assert all(p.requires_grad for p in model.layer2.parameters())
    assert all(m.training for m in model.layer2.modules())


@pytest.mark.parametrize('depth,last', [(50, 'conv3'), (18, 'conv2')])
@pytest.mark.parametrize('norm_cfg', [GN, BCN_ESTIMATE, BN])
def test_zero_init_residual_in_resnet3d(depth, last, norm_cfg):
    cfg = dict(depth=depth, pretrained=None, pretrained2d=False,
               norm_cfg=dict(norm_cfg, type=norm_cfg['type'].replace(
                   'BN2d', 'BN3d')),
               conv_cfg=dict(type='ConvWS3d'), zero_init_residual=True)
    ours = MODELS.build(dict(type='ResNet3d', **cfg))
    ours.init_weights()
    theirs = mmaction_backbones.ResNet3d(**cfg)
    if norm_cfg is BN:
        theirs.init_weights()
    else:
        with pytest.raises(AttributeError, match="no attribute 'bn'"):
            theirs.init_weights()
    for block in ours.layer1:
        norm = getattr(block, last).norm
        assert not norm.weight.any() and not norm.bias.any()
        if norm_cfg is BN:
            assert not getattr(theirs.layer1[0], last).bn.weight.any()
        first = block.conv1.norm
        assert torch.equal(first.weight, torch.ones_like(first.weight))
        if isinstance(norm, BatchChannelNorm):  # only the group affine
            assert torch.equal(norm.pbn.weight,
                               torch.ones_like(norm.pbn.weight))


def torchvision_file(tmp_path):
    """A BN ResNet-50 in torchvision's layout (what
    ``pretrained='torchvision://resnet50'`` loads), random weights."""
    model = AuthorsResNet('bn', None)
    randomize(model)
    path = tmp_path / 'resnet50_torchvision.pth'
    torch.save(model.state_dict(), path)
    return path


def test_a_torchvision_file_into_gn_is_refused_not_half_loaded(tmp_path):
    path = str(torchvision_file(tmp_path))
    # ResNetTSM: strict=False, every norm parameter dropped without a word
    theirs = backbone('ResNetTSM', GN, mmaction=True, pretrained=path,
                      pretrained2d=True)
    theirs.init_weights()
    norm = theirs.layer1[0].conv1.gn
    assert torch.equal(norm.weight, torch.ones_like(norm.weight))
    with pytest.raises(ValueError, match='pretrained2d=False'):
        backbone('ResNetTSM', GN, pretrained=path, pretrained2d=True)
    # ResNet (torchvision_pretrain) and ResNet3d (pretrained2d) fail on .bn
    with pytest.raises(AttributeError, match="no attribute 'bn'"):
        backbone('ResNet', GN, mmaction=True, pretrained=path).init_weights()
    with pytest.raises(ValueError, match='torchvision_pretrain=False'):
        backbone('ResNet', BCN_ESTIMATE, pretrained=path)
    with pytest.raises(ValueError, match='GN layers'):
        MODELS.build(dict(type='ResNet3d', depth=50, pretrained=path,
                          norm_cfg=dict(GN), conv_cfg=dict(type='ConvWS3d')))


def test_a_torchvision_file_into_bn_loads_as_mmaction_does(tmp_path):
    path = str(torchvision_file(tmp_path))
    for cls_name in ('ResNet', 'ResNetTSM'):
        kwargs = dict(pretrained=path, conv_cfg=None)
        if cls_name == 'ResNetTSM':
            kwargs['pretrained2d'] = True
        ours = backbone(cls_name, BN, **kwargs)
        theirs = backbone(cls_name, BN, mmaction=True, **kwargs)
        ours.init_weights()
        theirs.init_weights()
        mine, reference = ours.state_dict(), theirs.state_dict()
        assert mine.keys() == reference.keys()
        assert all(torch.equal(mine[k], reference[k]) for k in mine)
        assert torch.equal(mine['conv1.bn.weight'],
                           torch.load(path)['bn1.weight'])


# --------------------------------------------------------------------------
# The authors' ImageNet files, under TSM's shift

@pytest.mark.parametrize('kind,variant', [('gn', 'A'), ('bcn', 'B')])
@pytest.mark.parametrize('cls_name', ['ResNetTSM', 'ResNet'])
def test_the_authors_files_load_tensor_by_tensor(tmp_path, cls_name, kind,
                                                 variant):
    authors = AuthorsResNet(kind, variant)
    randomize(authors)
    path = tmp_path / f'authors-{kind}.pth.tar'
    torch.save({'state_dict': {f'module.{k}': v for k, v in
                               authors.state_dict().items()}}, path)
    model = backbone(cls_name, NORMS[kind],
                     conv_cfg=dict(type='ConvWS', variant=variant),
                     init_cfg=dict(type='AuthorsPretrained',
                                   checkpoint=str(path)))
    model.init_weights()
    loaded = model.state_dict()
    result = convert(load_state_dict(str(path))[0], loaded)
    assert result.complete and result.dropped == ['fc.weight', 'fc.bias']
    assert len(result.state_dict) == len(authors.state_dict()) - 2
    for key, value in result.state_dict.items():
        assert torch.equal(loaded[key], value), key
    weight = authors.layer1[0].conv1.weight
    if cls_name == 'ResNetTSM':  # the shifted conv, under .net
        assert torch.equal(loaded['layer1.0.conv1.conv.net.weight'], weight)
    else:
        assert torch.equal(loaded['layer1.0.conv1.conv.weight'], weight)
        # the same network: features equal to the authors' model's
        model.double().eval()
        authors.double().eval()
        x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(model(x), authors.features(x)[-1],
                                       rtol=1e-10, atol=1e-10)


def test_a_gn_or_bcn_mmaction_config_without_the_fixes_is_refused(
        monkeypatch):
    cfg = Config(dict(default_scope='mmaction', model=dict(
        type='Recognizer2D', backbone=dict(type='ResNetTSM', depth=50,
                                           norm_cfg=dict(BCN_ESTIMATE)))))
    check_config(cfg, training=False)
    monkeypatch.delitem(sys.modules, 'ws_mm.toolbox.action')
    with pytest.raises(ConfigError, match="add 'ws_mm.toolbox.action'"):
        check_config(cfg, training=False)
    cfg.model.backbone.norm_cfg = dict(BN)
    check_config(cfg, training=False)
