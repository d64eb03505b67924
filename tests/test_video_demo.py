"""The video demo: the GN+WS and BCN+WS TSMs of configs/demo/ (mmaction2)
say what they are and fit the clips of tools/make_demo_data.py, build and
train a step with every parameter in TSM's optimizer, and train and test on
2 processes through tools/demo.py (tools/dist_train.sh, tools/dist_test.sh).
tests/test_configs.py leaves mmaction configs to this file and to
tests/test_table12_configs.py."""
import json
import math
import re
import sys

import pytest
import torch

pytest.importorskip('mmaction', reason='mmaction2 is installed in .venv')

import devkit  # noqa: E402  (conftest.py loads it)
import ws_mm  # noqa: E402,F401  (before mmaction.models, which it completes)
from mmengine.config import Config  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.utils import import_modules_from_strings  # noqa: E402
from ws_mm.layers import WS_CONVS, BatchChannelNorm  # noqa: E402

pytestmark = pytest.mark.filterwarnings('ignore:pkg_resources is deprecated')

# tools/demo.py's tasks and their configs; the norm each switches to
DEMOS = {'video-gn-ws': devkit.DEMO_CONFIGS['mmaction'],
         'video-bcn-ws': devkit.DEMO_BCN_TSM}
NORMS = {
    'video-gn-ws': (dict(type='ConvWS'),
                    dict(type='GN', num_groups=32, requires_grad=True)),
    'video-bcn-ws': (dict(type='ConvWS', variant='B'),
                     dict(type='BCN', num_groups=32, mode='estimate',
                          momentum=0.1)),
}


def load(task):
    return Config.fromfile(devkit.ROOT / DEMOS[task])


def build(cfg):
    """The model and optimizer wrapper of a config, as its runner builds
    them (its custom_imports first)."""
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.default_scope)
    from mmaction.registry import MODELS
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model, build_optim_wrapper(model, cfg.optim_wrapper)


@pytest.mark.parametrize('task', DEMOS)
def test_demo_tsm_says_what_it_is_and_fits_the_clips(task, load_tool):
    data = load_tool('make_demo_data')
    cfg = load(task)
    name = DEMOS[task].rsplit('/', 1)[1]
    assert cfg.default_scope == 'mmaction'
    assert cfg.custom_imports == dict(
        imports=['ws_mm', 'ws_mm.toolbox.action'], allow_failed_imports=False)
    backbone, head = cfg.model.backbone, cfg.model.cls_head
    conv_cfg, norm_cfg = NORMS[task]
    assert (backbone.conv_cfg, backbone.norm_cfg) == (conv_cfg, norm_cfg)
    # R-18 from scratch, small and local: no download, the demo data
    assert (backbone.type, backbone.depth) == ('ResNetTSM', 18)
    assert f'_r{backbone.depth}_' in name
    assert backbone.pretrained is None and not backbone.pretrained2d
    assert 'init_cfg' not in backbone and cfg.load_from is None
    for split in ('train', 'val', 'test'):
        dataset = cfg[f'{split}_dataloader'].dataset
        assert dataset.data_root == 'data/demo/sth'
        assert dataset.filename_tmpl == data.FRAME_TMPL
        # one frame per segment, as many as the shift and the head expect
        [sampler] = [t for t in dataset.pipeline
                     if t.type == 'SampleFrames']
        assert (sampler.clip_len, sampler.num_clips) == (
            1, backbone.num_segments)
        assert sampler.get('test_mode', False) == (split != 'train')
    assert f'-1x1x{backbone.num_segments}-' in name
    assert head.num_segments == backbone.num_segments
    assert tuple(cfg.classes) == data.MOTIONS
    assert head.num_classes == len(data.MOTIONS)
    # a flipped clip moves the other way: left and right swap labels
    [flip] = [t for t in cfg.train_dataloader.dataset.pipeline
              if t.type == 'Flip']
    left, right = data.MOTIONS.index('left'), data.MOTIONS.index('right')
    assert flip.flip_label_map == {left: right, right: left}
    assert flip.get('direction', 'horizontal') == 'horizontal'
    # the name's batch and schedule
    processes, batch = map(int, re.search(r'_(\d+)xb(\d+)-', name).groups())
    assert (processes, batch) == (2, cfg.train_dataloader.batch_size)
    iters = int(re.search(r'-(\d+)it_', name).group(1))
    assert cfg.train_cfg == dict(type='IterBasedTrainLoop', max_iters=iters,
                                 val_interval=iters)
    assert cfg.default_hooks.checkpoint.interval == iters
    assert cfg.default_hooks.checkpoint.by_epoch is False
    assert cfg.train_dataloader.num_workers == 0
    assert cfg.optim_wrapper.constructor == 'TSMOptimWrapperConstructor'
    assert cfg.optim_wrapper.paramwise_cfg == dict(fc_lr5=True)
    assert cfg.val_evaluator.type == cfg.test_evaluator.type == 'AccMetric'


def test_the_two_demo_tsms_differ_in_the_normalization_only():
    assert devkit.config_diff(load('video-gn-ws'), load('video-bcn-ws')) == {
        'model.backbone.conv_cfg.variant', 'model.backbone.norm_cfg.type',
        'model.backbone.norm_cfg.mode', 'model.backbone.norm_cfg.momentum',
        'model.backbone.norm_cfg.requires_grad'}


@pytest.mark.parametrize('task', DEMOS)
def test_demo_tsm_trains_a_step_with_every_parameter_optimized(task):
    cfg = load(task)
    conv_cfg, norm_cfg = NORMS[task]
    model, optim_wrapper = build(cfg)
    convs = [m for m in model.backbone.modules()
             if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(isinstance(m, WS_CONVS) for m in convs)
    assert {m.variant.name for m in convs} == {conv_cfg.get('variant', 'A')}
    norm = (BatchChannelNorm if norm_cfg['type'] == 'BCN' else
            torch.nn.GroupNorm)
    assert len([m for m in model.modules() if isinstance(m, norm)]) == len(
        convs)  # a norm after each conv
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimized = [p for group in optim_wrapper.optimizer.param_groups
                 for p in group['params']]
    assert sorted(map(id, optimized)) == sorted(map(id, trainable))

    # 2 clips of 8 frames, 64 px
    from mmaction.structures import ActionDataSample
    segments = cfg.model.backbone.num_segments
    batch = dict(inputs=[torch.randint(0, 256, (segments, 3, 64, 64),
                                       dtype=torch.uint8) for _ in range(2)],
                 data_samples=[ActionDataSample().set_gt_label(label)
                               for label in (0, 1)])
    model.train()
    losses = model.train_step(batch, optim_wrapper)
    assert math.isfinite(losses['loss'].item())
    for m in model.modules():
        if isinstance(m, BatchChannelNorm):  # the estimates moved
            assert int(m.pbn.num_batches_tracked) == 1


@pytest.mark.e2e
@pytest.mark.dist
def test_reduced_video_demo_run(tmp_path, demo_data, run_tool):
    """tools/demo.py --tasks video, 3 iterations: each demo TSM trained on
    2 processes with tools/dist_train.sh (finite losses, a checkpoint whose
    optimizer stepped every parameter), tested with tools/dist_test.sh
    (top-1 in its log and the summary)."""
    work, iters = tmp_path / 'work', 3
    proc = run_tool(
        [sys.executable, 'tools/demo.py', '--tasks', 'video', '--iters',
         str(iters), '--num-train', str(demo_data.num_train), '--num-val',
         str(demo_data.num_val), '--size', str(demo_data.size), '--data',
         str(demo_data.root), '--work-dir', str(work)], timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'is up to date' in proc.stdout  # the shared data, not rewritten
    summary = json.loads((work / 'summary.json').read_text())
    assert list(summary) == list(DEMOS)
    for task in DEMOS:
        losses = [s['loss'] for s in devkit.read_scalars(work / task)
                  if 'loss' in s]
        assert losses and all(math.isfinite(x) for x in losses), losses
        checkpoint = torch.load(work / task / f'iter_{iters}.pth',
                                weights_only=False)
        assert checkpoint['meta']['iter'] == iters
        # SGD keeps a momentum buffer for each parameter it stepped
        model, _ = build(load(task))
        trainable = [p for p in model.parameters() if p.requires_grad]
        assert len(checkpoint['optimizer']['state']) == len(trainable)
        (log, ) = (work / f'{task}_test').glob('*/*.log')
        assert 'acc/top1' in devkit.logged_test_metrics(log)
        assert 0.0 <= summary[task]['acc/top1'] <= 1.0
