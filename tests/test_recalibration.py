"""Recalibration of normalization statistics: the function
(ws_mm.recalibration) on small float64 models against a float64 reference
written here, on 1 and 2 processes, and its hook (ws_mm.toolbox) in short
toolbox runs of the demo configs switched to BCN."""
import re
import sys

import devkit  # conftest.py loads it
import pytest
import torch
from torch import nn

from ws_mm import recalibrate_norm_statistics
from ws_mm.layers import BatchChannelNorm, EstimatedBatchNorm
from ws_mm.toolbox.recalibration import NormRecalibrationHook

# ---------------------------------------------------------------- reference
def rows(x):
    return x.transpose(0, 1).flatten(1)


def bn_reference(inputs):
    """BatchNorm's running statistics with momentum=None: the mean of the
    batch means and of the unbiased batch variances."""
    means = torch.stack([rows(x).mean(1) for x in inputs])
    variances = torch.stack([rows(x).var(1, unbiased=True) for x in inputs])
    return means.mean(0), variances.mean(0)


def estimate_reference(inputs):
    """An estimate stage's update at rate 1 / t: the mean of the batch
    means, and of the batches' second moments around the estimate before
    each (the first batch: its variance)."""
    mean = rows(inputs[0]).mean(1)
    var = rows(inputs[0]).var(1, unbiased=False)
    for t, x in enumerate(inputs[1:], start=2):
        second_moment = (rows(x) - mean[:, None]).square().mean(1)
        mean = mean + (rows(x).mean(1) - mean) / t
        var = var + (second_moment - var) / t
    return mean, var


def randn(*shape, seed, mean=0.0, std=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * std + mean


class Net(nn.Module):
    """An estimate stage on the input, a BN, a BN frozen as by
    ``norm_eval=True``, a BCN in a head, and a BN that no batch reaches."""

    def __init__(self):
        super().__init__()
        self.est = EstimatedBatchNorm(3, momentum=0.3)
        self.conv = nn.Conv2d(3, 6, 3)
        self.bn = nn.BatchNorm2d(6, momentum=None)
        self.frozen = nn.BatchNorm2d(6)
        self.head = nn.Sequential(nn.Conv2d(6, 8, 1),
                                  BatchChannelNorm(8, num_groups=4))
        self.unused = nn.BatchNorm2d(8)
        self.double()

    def train(self, mode=True):
        super().train(mode)
        self.frozen.eval()
        return self

    def forward(self, x):
        y = self.frozen(self.bn(self.conv(self.est(x)))).relu()
        return self.head(y)


def record_inputs(model, names):
    """The inputs each named layer normalizes, batch by batch; a BCN stage
    ``pbn`` normalizes its BCN's input (the BCN computes it, fused)."""
    inputs = {name: [] for name in names}
    for name in names:
        hooked = name[:-len('.pbn')] if name.endswith('.pbn') else name
        model.get_submodule(hooked).register_forward_pre_hook(
            lambda m, args, name=name: inputs[name].append(args[0].clone()))
    return inputs


@pytest.fixture
def trained_net():
    """A Net after some training, evaluated with one submodule in training
    mode, and its estimates poisoned (NaN), as an older checkpoint's could
    be."""
    torch.manual_seed(0)
    net = Net().train()
    for seed in range(3):
        net(randn(2, 3, 6, 6, seed=seed, mean=2.0, std=3.0))
    net.eval()
    net.head.train()
    net.est.running_mean[1] = float('nan')
    with torch.no_grad():  # statistics from elsewhere, not BN's initial ones
        net.unused.running_mean.normal_()
        net.unused.num_batches_tracked.fill_(7)
    return net


BATCHES = [randn(2 + i % 3, 3, 6, 6, seed=10 + i, mean=1.0, std=2.0)
           for i in range(5)]
RECALIBRATED = ['est', 'bn', 'head.1.pbn']


# ---------------------------------------------------------------- one process
def test_statistics_are_the_float64_average_over_the_batches(trained_net):
    net = trained_net
    modes = {name: m.training for name, m in net.named_modules()}
    untouched = {name: {k: v.clone() for k, v in
                        net.get_submodule(name).state_dict().items()}
                 for name in ('frozen', 'unused')}
    inputs = record_inputs(net, RECALIBRATED)

    done = recalibrate_norm_statistics(net, iter(BATCHES))

    assert done.batches == len(BATCHES) and done.layers == RECALIBRATED
    tol = dict(rtol=1e-12, atol=1e-12)
    for name, reference in (('est', estimate_reference),
                            ('bn', bn_reference),
                            ('head.1.pbn', estimate_reference)):
        layer = net.get_submodule(name)
        assert len(inputs[name]) == len(BATCHES)
        mean, var = reference(inputs[name])
        torch.testing.assert_close(layer.running_mean, mean, **tol)
        torch.testing.assert_close(layer.running_var, var, **tol)
        assert layer.num_batches_tracked.item() == len(BATCHES)
    for name, state in untouched.items():
        for key, value in net.get_submodule(name).state_dict().items():
            assert torch.equal(value, state[key]), (name, key)
    assert {n: m.training for n, m in net.named_modules()} == modes
    assert (net.est.momentum, net.bn.momentum, net.frozen.momentum,
            net.head[1].pbn.momentum) == (0.3, None, 0.1, 0.1)


def test_the_model_forward_is_replaceable(trained_net):
    seen = []

    def forward(batch):
        seen.append((batch['image'], torch.is_grad_enabled()))
        trained_net(batch['image'])

    done = recalibrate_norm_statistics(
        trained_net, [dict(image=b) for b in BATCHES[:2]], forward)
    assert done.batches == 2 and seen == [(b, False) for b in BATCHES[:2]]
    assert trained_net.bn.num_batches_tracked.item() == 2


def test_no_batches_is_an_error_that_changes_nothing(trained_net):
    state = {k: v.clone() for k, v in trained_net.state_dict().items()}
    with pytest.raises(ValueError, match='no batches'):
        recalibrate_norm_statistics(trained_net, [])
    for key, value in trained_net.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0,
                                   equal_nan=True, msg=key)
    assert not trained_net.training and trained_net.head.training


def test_a_model_without_statistics_is_an_error():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.GroupNorm(2, 4)).eval()
    with pytest.raises(ValueError, match='no BatchNorm or BCN estimate'):
        recalibrate_norm_statistics(net, [torch.randn(1, 3, 2, 2)])
    assert not any(m.training for m in net.modules())


@pytest.mark.parametrize('kwargs,error,match', [
    (dict(num_batches=0), ValueError, 'num_batches must be a positive int'),
    (dict(num_batches=2.0), TypeError, 'num_batches must be a positive int'),
    (dict(num_batches=True), TypeError, 'num_batches must be a positive int'),
    (dict(when='after_val'), ValueError, r"unknown when='after_val'; use "
     r"one of \['before_val', 'end_of_training', 'before_test'\]"),
])
def test_hook_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=f'NormRecalibrationHook: {match}'):
        NormRecalibrationHook(**kwargs)


# ---------------------------------------------------------------- two ranks
@pytest.mark.e2e
@pytest.mark.dist
def test_two_ranks_average_over_the_batches_of_both(two_ranks):
    ranks = two_ranks('recalibrate')
    for key in ranks[0]['state']:
        assert torch.equal(ranks[0]['state'][key], ranks[1]['state'][key]), key
    state = ranks[0]['state']
    tol = dict(rtol=1e-12, atol=1e-12)
    # BN: every batch of both ranks counts once.
    mean, var = bn_reference(ranks[0]['bn'] + ranks[1]['bn'])
    torch.testing.assert_close(state['2.running_mean'], mean, **tol)
    torch.testing.assert_close(state['2.running_var'], var, **tol)
    assert state['2.num_batches_tracked'].item() == 2 * len(ranks[0]['bn'])
    local, _ = bn_reference(ranks[0]['bn'])
    assert (local - mean).abs().max() > 0.1  # not rank 0's own average
    # The estimate stage: each update from the batches of both ranks.
    mean, var = estimate_reference([torch.cat(pair) for pair in zip(
        ranks[0]['est'], ranks[1]['est'])])
    torch.testing.assert_close(state['0.running_mean'], mean, **tol)
    torch.testing.assert_close(state['0.running_var'], var, **tol)


# ----------------------------------------------------- the hook in a real run
NORMS = {
    'mmdet': ['backbone', 'neck', 'roi_head.bbox_head', 'roi_head.mask_head'],
    'mmseg': ['backbone', 'decode_head', 'auxiliary_head'],
}


def bcn_demo_options(toolbox, demo_data):
    """--cfg-options for the demo config of ``toolbox`` on the test run's
    demo data, with every norm layer switched to BCN (estimate mode)."""
    options = devkit.cfg_options(
        devkit.demo_data_options(toolbox, demo_data.root))
    options += [f'model.{part}.norm_cfg.type=BCN' for part in NORMS[toolbox]]
    return options + ['model.backbone.norm_eval=False']


@pytest.mark.e2e
@pytest.mark.parametrize('toolbox', ['mmdet', 'mmseg'])
def test_hook_in_a_short_run_of_the_demo_switched_to_bcn(
        tmp_path, demo_data, run_tool, toolbox):

    def config(when):
        path = tmp_path / f'{when}.py'
        path.write_text(
            f"_base_ = ['{devkit.ROOT / devkit.DEMO_CONFIGS[toolbox]}']\n"
            "custom_hooks = [dict(type='NormRecalibrationHook', "
            f"num_batches=3, when='{when}')]\n")
        return str(path)

    options = bcn_demo_options(toolbox, demo_data) + [
        'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=2', 'randomness.seed=0']
    work_dir = tmp_path / 'work'
    proc = run_tool([sys.executable, 'tools/train.py',
                     config('end_of_training'), '--work-dir', str(work_dir),
                     '--cfg-options', *options])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    state = torch.load(work_dir / 'iter_2.pth',
                       weights_only=False)['state_dict']
    counts = {k: int(v) for k, v in state.items()
              if k.endswith('pbn.num_batches_tracked')}
    for part in NORMS[toolbox]:
        assert any(k.startswith(part) for k in counts), part
    # The hook ran once, on every BCN estimate stage, over 3 batches, and
    # before the validation that follows the last iteration.
    log = next(work_dir.glob('*/*.log')).read_text()
    assert_recalibrated_once_before(log, 'val', layers=len(counts))
    # Two training batches, then three of recalibration that replaced them,
    # before the last checkpoint: in every part, heads included.
    assert set(counts.values()) == {3}, counts

    # A checkpoint recalibrated before testing it (tools/test.py).
    test_dir = tmp_path / 'test'
    proc = run_tool([sys.executable, 'tools/test.py', config('before_test'),
                     str(work_dir / 'iter_2.pth'), '--work-dir',
                     str(test_dir), '--cfg-options', *options])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = next(test_dir.glob('*/*.log')).read_text()
    assert_recalibrated_once_before(log, 'test', layers=len(counts))


def assert_recalibrated_once_before(log, loop, layers, batches=3):
    """The hook's own line, written when it ran (the class name alone is in
    the log from the start: the config dump, the hook table), says it
    recalibrated ``layers`` layers over ``batches`` batches, once, before
    the first line the ``loop`` ('val' or 'test') logs (its progress or its
    results)."""
    ran = [(int(m[1]), int(m[2]), m.start()) for m in re.finditer(
        r'^.* - mmengine - INFO - NormRecalibrationHook: recalibrated the '
        r'statistics of (\d+) normalization layers over (\d+) training '
        r'batches in [\d.]+ s$', log, re.MULTILINE)]
    assert [(n, m) for n, m, _ in ran] == [(layers, batches)], ran
    loop_lines = [m.start() for m in re.finditer(
        rf'^.* - mmengine - INFO - (Epoch|Iter)\({loop}\) ', log,
        re.MULTILINE)]
    assert loop_lines, f'no {loop} loop in the log'
    assert ran[0][2] < loop_lines[0], (
        f'recalibrated after the {loop} loop had started')


@pytest.mark.e2e
def test_frozen_statistics_stay_as_loaded_while_the_rest_trains(
        tmp_path, demo_data, run_tool):
    """Two runs of the BCN demo: the second starts from the first's
    checkpoint with FreezeNormStatisticsHook; its checkpoint has every
    estimate exactly as loaded, and trained affines."""
    config = devkit.ROOT / devkit.DEMO_CONFIGS['mmseg']
    options = bcn_demo_options('mmseg', demo_data) + [
        'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=2', 'randomness.seed=0']
    first = tmp_path / 'first'
    proc = run_tool([sys.executable, 'tools/train.py', str(config),
                     '--work-dir', str(first), '--cfg-options', *options])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    frozen_config = tmp_path / 'frozen.py'
    frozen_config.write_text(
        f"_base_ = ['{config}']\n"
        f"load_from = '{first / 'iter_2.pth'}'\n"
        "custom_hooks = [dict(type='FreezeNormStatisticsHook')]\n")
    second = tmp_path / 'second'
    proc = run_tool([sys.executable, 'tools/train.py', str(frozen_config),
                     '--work-dir', str(second), '--cfg-options', *options])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    def state(work_dir):
        return torch.load(work_dir / 'iter_2.pth',
                          weights_only=False)['state_dict']
    loaded, trained = state(first), state(second)
    statistics = [k for k in loaded if k.endswith(
        ('running_mean', 'running_var', 'num_batches_tracked'))]
    assert len(statistics) == 3 * sum(k.endswith('pbn.running_mean')
                                      for k in loaded) > 0
    for key in statistics:
        assert torch.equal(trained[key], loaded[key]), key
    # The heads' estimate stages train their affines. (Not necessarily
    # every one in the backbone: a block's last norm starts with its group
    # affine at zero, zero_init_residual, which holds its first stage's
    # gradient at zero until that affine moves.)
    affines = [k for k in loaded if k.endswith('pbn.weight')
               and k.startswith(('decode_head', 'auxiliary_head'))]
    assert affines
    assert all(not torch.equal(trained[k], loaded[k]) for k in affines)
