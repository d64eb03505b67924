"""ws_mm on CUDA, and the same checks on CPU where a CPU can run them:
ConvWS2d against mmcv's, autocast against float32, the WS backward in float32
against its float64 reference, BCN against its float64 reference,
``BCN(sync_bn=True)`` on 2 GPUs, a training step of each demo model with
``--amp``, and speed and peak memory of the layers and models.

Tests marked ``gpu`` (the ``cuda`` cases, and the tests that need CUDA
alone) are skipped with the reason where torch sees no CUDA device
(conftest.py). ``make test-gpu`` runs them (``-m gpu``) and writes a JSON
report (``--report``) with every value the tests recorded through the
``record`` fixture: errors with their tolerances, speed and memory ratios.

Errors are normwise (``references.rel_error``): ``max|result - reference| /
max|reference|``. The speed tests record ratios and assert only that they are
finite: no timing thresholds.
"""
import math
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.conv_ws import ConvWS2d as MMCVConvWS2d
from torch import nn

import devkit  # conftest.py loads it
from references import (ref_bcn_batch_mode, ref_channel_stats,
                        reference_ws, rel_error, rounding_tol)
import ws_mm.layers.batch_channel_norm as bcn_module
from ws_mm.functional import weight_standardization
from ws_mm.layers import BatchChannelNorm, ConvWS2d

DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.gpu)]

# (batch, in, out, kernel, stride, dilation, groups, height, width): the conv
# arguments mmcv's ConvWS2d takes, each away from its default somewhere.
EXACT_SHAPES = [
    (2, 64, 128, 3, 1, 1, 1, 28, 28),
    (2, 128, 64, 1, 2, 1, 1, 28, 28),
    (2, 64, 64, 3, 1, 2, 8, 28, 28),
]
# BCN: (batch, channels, groups, height, width); channels with their own
# offsets and spreads, so that wrong statistics show.
BCN_SHAPE = (4, 64, 8, 12, 12)
# The image size of the model speed test, as benchmark_speed's default.
MODEL_SIZE = 320


def shape_id(shape):
    n, cin, cout, k, stride, dilation, groups, h, w = shape
    return f'{cin}-{cout}-k{k}-s{stride}-d{dilation}-g{groups}'


def dtype_name(dtype):
    return str(dtype).split('.')[-1]


@pytest.fixture(scope='module')
def bench(load_tool):
    """tools/benchmark_speed.py: its shapes, models and timing."""
    return load_tool('benchmark_speed')


# ---------------------------------------------------------------- helpers
def conv_results(layer, x, grad_out):
    """Output and gradients (input, weight, bias) of a conv layer."""
    x = x.detach().requires_grad_()
    out = layer(x)
    grads = torch.autograd.grad(out, (x, layer.weight, layer.bias),
                                grad_out.to(out.dtype))
    return dict(zip(('out', 'grad_input', 'grad_weight', 'grad_bias'),
                    (out, *grads)))


def small_spread_weight(layer):
    """Weights with a small spread on an offset, as trained convs have: the
    eps of WS and the centering then matter."""
    with torch.no_grad():
        layer.weight.normal_(0.003, 0.01)
    return layer


def exact_layer(shape, device, dtype, cls):
    """A conv of class ``cls`` for an EXACT_SHAPES entry."""
    n, cin, cout, k, stride, dilation, groups, h, w = shape
    return cls(cin, cout, k, stride=stride, padding=dilation * (k // 2),
               dilation=dilation, groups=groups).to(device, dtype)


def without_tf32(fn, *args):
    """``fn(*args)`` in float32 proper: TF32 (on by default for cuDNN convs)
    rounds as coarsely as float16."""
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        return fn(*args)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


def magnitudes(x, w_hat, bias, grad_out, conv_args):
    """The sums of |terms| behind each result of a conv: the same conv and
    its backward on absolute values, in float64."""
    x = x.double().abs().requires_grad_()
    w_hat = w_hat.double().abs().requires_grad_()
    bias = bias.double().abs().requires_grad_()
    out = F.conv2d(x, w_hat, bias, **conv_args)
    grads = torch.autograd.grad(out, (x, w_hat, bias), grad_out.double().abs())
    return dict(zip(('out', 'grad_input', 'grad_weight', 'grad_bias'),
                    (out.detach(), *grads)))


def autocast_runs(device, dtype):
    """Whether autocast on ``device`` runs a plain conv in ``dtype`` (it
    warns of a dtype it does not support and stays off, or, in older torch,
    refuses it)."""
    x = torch.ones(1, 1, 2, 2, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        try:
            with torch.autocast(device, dtype=dtype):
                return F.conv2d(x, x).dtype == dtype
        except RuntimeError:
            return False


def bcn_input(device):
    n, c, _, h, w = BCN_SHAPE
    g = torch.Generator().manual_seed(0)
    offsets = torch.randn(c, 1, 1, generator=g) * 3
    spreads = torch.rand(c, 1, 1, generator=g) * 4 + 0.1
    return (torch.randn(n, c, h, w, generator=g) * spreads +
            offsets).to(device)


def random_bcn(mode, device, dtype, **kwargs):
    """A BCN with affine parameters away from 1 and 0, so that they count."""
    _, c, groups, _, _ = BCN_SHAPE
    bcn = BatchChannelNorm(c, groups, mode=mode, **kwargs)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in bcn.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + 1)
    return bcn.to(device, dtype)


# ------------------------------------------------------------ WS backward
@pytest.mark.parametrize('device', DEVICES)
def test_ws_backward_in_float32_is_the_reference_up_to_rounding(
        bench, record, device):
    """WS's backward (torch's batch-norm backward kernel on ``device``) in
    float32 at the weights of benchmark_speed's CONV_SHAPES (each once),
    against autograd through the float64 formula. Per filter the gradient
    is (g - mean(g) - W_hat <g, W_hat> / (n - 1)) / s, two sums over the
    filter's n weights: off by about eps * sqrt(n) times the terms'
    magnitudes, where a wrong kernel is off by the gradient's own size."""
    weights = dict.fromkeys((cout, cin, k)
                            for _, cin, cout, k, _, _ in bench.CONV_SHAPES)
    for cout, cin, k in weights:
        torch.manual_seed(0)
        w = torch.randn(cout, cin, k, k, device=device) * 0.02
        grad_out = torch.randn_like(w)
        w64 = w.double().requires_grad_()
        (ref, ) = torch.autograd.grad(reference_ws(w64, 'A'), w64,
                                      grad_out.double())
        wd = w.clone().requires_grad_()
        (grad, ) = torch.autograd.grad(weight_standardization(wd), wd,
                                       grad_out)
        rows = w64.detach().flatten(1)
        w_hat = reference_ws(rows, 'A').abs()
        g = grad_out.double().flatten(1).abs()
        terms = (g + g.mean(1, keepdim=True) + w_hat *
                 (g * w_hat).mean(1, keepdim=True)) / rows.std(1, keepdim=True)
        record(f'{device} {cout}x{cin}x{k}x{k} error', rel_error(grad, ref),
               tol=rounding_tol(torch.float32, rows.shape[1]) *
               (terms.max() / ref.abs().max()).item())
    record.check()


# -------------------------------------------------------- ConvWS2d vs mmcv
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32],
                         ids=dtype_name)
@pytest.mark.parametrize('shape', EXACT_SHAPES, ids=shape_id)
@pytest.mark.parametrize('device', DEVICES)
def test_conv_ws_matches_mmcv(device, shape, dtype, record):
    """ws_mm's ConvWS2d against mmcv's, forward and backward (output, input,
    weight and bias gradients). The reference is mmcv's in float64.
    float64: within rounding_tol over the longest sum, near float64's
    machine precision. float32: ws_mm's error no more than 3x mmcv's own
    (plus one ulp); both convolve in the same precision (TF32 where
    enabled), so only the WS arithmetic differs."""
    n, cin, cout, k, stride, _, groups, h, w = shape
    torch.manual_seed(0)
    # Made in float32, so that every precision sees the same numbers.
    reference = small_spread_weight(exact_layer(
        shape, device, torch.float32, MMCVConvWS2d)).double()
    x = torch.randn(n, cin, h, w, device=device).double()
    with torch.no_grad():
        grad_out = torch.randn_like(reference(x))
    ref = conv_results(reference, x, grad_out)
    longest = max(cin // groups * k * k, cout // groups * k * k,
                  ref['out'][0, 0].numel() * n)
    if device == 'cuda':
        record('cudnn.allow_tf32', torch.backends.cudnn.allow_tf32)
    errors = {}
    for name, cls in (('mmcv', MMCVConvWS2d), ('ws_mm', ConvWS2d)):
        layer = exact_layer(shape, device, dtype, cls)
        layer.load_state_dict(reference.state_dict())
        got = conv_results(layer, x.to(dtype), grad_out.to(dtype))
        errors[name] = {key: rel_error(v, ref[key]) for key, v in got.items()}
    for key, error in errors['ws_mm'].items():
        if dtype == torch.float64:
            tol = rounding_tol(dtype, longest)
            assert tol < 1e-12  # near float64's machine precision
        else:
            mmcv = record(f'mmcv {key}', errors['mmcv'][key])
            tol = 3 * mmcv + torch.finfo(dtype).eps
            # a float32 rounding error was measured: not compared with itself
            assert error > 0, key
        record(key, error, tol=tol)
    record.check()


# ---------------------------------------------------------------- autocast
@pytest.mark.parametrize('shape', EXACT_SHAPES, ids=shape_id)
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16],
                         ids=dtype_name)
@pytest.mark.parametrize('device', DEVICES)
def test_autocast_matches_float32(device, dtype, shape, record):
    """ConvWS2d under autocast against float32 (without TF32), forward and
    backward: the results in ``dtype``, finite, and each within 2 eps of its
    terms' magnitude (the terms from the float64 reference W_hat), the
    worst-case error of rounding both factors of every product and the
    result to ``dtype`` (sums in float32). The weight gradient per filter:
    WS's backward scales by 1 / (std + eps) a projection, which does not
    lengthen a vector."""
    if (dtype == torch.bfloat16 and device == 'cuda'
            and torch.cuda.get_device_capability() < (8, 0)):
        pytest.skip('bfloat16 needs a GPU of compute capability 8.0 or more, '
                    f'this one: {torch.cuda.get_device_capability()}')
    if not autocast_runs(device, dtype):
        pytest.skip(f'autocast on {device} does not run {dtype_name(dtype)} '
                    f'convs in torch {torch.__version__}')
    n, cin, _, k, stride, dilation, groups, h, w = shape
    eps = torch.finfo(dtype).eps
    torch.manual_seed(0)
    layer = small_spread_weight(exact_layer(shape, device, torch.float32,
                                            ConvWS2d))
    x = torch.randn(n, cin, h, w, device=device)
    with torch.no_grad():
        grad_out = torch.randn_like(layer(x))
    ref = without_tf32(conv_results, layer, x, grad_out)
    with torch.autocast(device, dtype=dtype):
        got = conv_results(layer, x, grad_out)
    assert got['out'].dtype == dtype
    weight = layer.weight.detach().double()
    variant = layer.variant
    mags = magnitudes(x, reference_ws(weight, variant.name, variant.eps),
                      layer.bias.detach(), grad_out,
                      dict(stride=stride, dilation=dilation,
                           padding=dilation * (k // 2), groups=groups))
    for key, value in got.items():
        record(f'{key} non-finite', (~value.isfinite()).sum().item(), tol=0)
        error = (value.double() - ref[key].double()).abs()
        if key == 'grad_weight':
            std = weight.flatten(1).std(1) + variant.eps
            error = error.flatten(1).norm(dim=1) * std
            mag = mags[key].flatten(1).norm(dim=1)
        else:
            mag = mags[key]
        # a result with no terms (an input a stride skips) must be exact
        ratio = error / (eps * mag).clamp_min(torch.finfo(mag.dtype).tiny)
        record(f'{key} error/(eps*magnitude)', ratio.max().item(), tol=2)
    record.check()


# --------------------------------------------------------------------- BCN
@pytest.mark.parametrize('path', ['fused', 'two-stage'])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32],
                         ids=dtype_name)
@pytest.mark.parametrize('device', DEVICES)
def test_bcn_modes_match_float64_reference(device, dtype, path, record,
                                           monkeypatch):
    """BCN's batch mode and estimate mode against the float64 reference, on
    one batch: batch mode in training (forward, and the input gradient);
    estimate mode's first training batch, which it normalizes by that
    batch's own statistics (and keeps them as its estimates); estimate mode
    in evaluation with the estimates set to the batch's statistics. All
    three are the same function of that batch. Within rounding_tol over the
    longest statistic (a channel's N*H*W): near machine precision in
    float64, below 1e-4 in float32. Each way the layer can compute, on
    every device (the layer runs it fused on CPU only)."""
    monkeypatch.setattr(bcn_module, 'FUSED', path == 'fused')
    n, c, _, h, w = BCN_SHAPE
    tol = rounding_tol(dtype, n * h * w)
    assert tol < (1e-12 if dtype == torch.float64 else 1e-4)
    x = bcn_input(device)
    mean, var = ref_channel_stats(x.double())

    batch = random_bcn('batch', device, dtype).train()
    xd = x.to(dtype).requires_grad_()
    out = batch(xd)
    grad_out = torch.randn_like(out)
    (grad, ) = torch.autograd.grad(out, xd, grad_out)
    x64 = x.double().requires_grad_()
    ref = ref_bcn_batch_mode(x64, batch)
    (ref_grad, ) = torch.autograd.grad(ref, x64, grad_out.double())
    record('batch mode', rel_error(out, ref), tol=tol)
    record('batch mode grad_input', rel_error(grad, ref_grad), tol=tol)

    estimate = random_bcn('estimate', device, dtype).train()
    first = estimate(x.to(dtype))
    record('estimate mode, first batch', rel_error(first, ref), tol=tol)
    record('estimates = batch mean',
           rel_error(estimate.pbn.running_mean, mean), tol=tol)
    record('estimates = batch variance',
           rel_error(estimate.pbn.running_var, var), tol=tol)

    fresh = random_bcn('estimate', device, dtype).eval()
    with torch.no_grad():
        fresh.pbn.running_mean.copy_(mean)
        fresh.pbn.running_var.copy_(var)
        evaluated = fresh(x.to(dtype))
    record('estimate mode eval = batch mode', rel_error(evaluated, ref),
           tol=tol)
    record.check()


@pytest.mark.gpu
@pytest.mark.dist
def test_sync_bcn_on_two_gpus_matches_one_process(tmp_path, two_ranks,
                                                  record):
    """BCN(mode='batch', sync_bn=True) on 2 GPUs (2 processes, nccl), half
    the batch each (tests/dist_scripts/bcn_sync_bn.py), against one process
    in batch mode on the whole batch: outputs and input gradients
    (concatenated), parameter gradients (summed over the ranks), running
    statistics of each rank; float32 within rounding_tol over a channel's
    N*H*W."""
    if torch.cuda.device_count() < 2:
        pytest.skip('needs 2 CUDA devices (nccl), '
                    f'{torch.cuda.device_count()} visible')
    x = bcn_input('cuda')
    whole = random_bcn('batch', 'cuda', torch.float32).train()
    # before the forward, which updates the running statistics
    state = {k: v.cpu().clone() for k, v in whole.state_dict().items()}
    xg = x.clone().requires_grad_()
    out = whole(xg)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    _, c, groups, _, _ = BCN_SHAPE
    torch.save(dict(x=x.cpu(), grad_out=grad_out.cpu(), state=state,
                    num_features=c, num_groups=groups),
               tmp_path / 'inputs.pt')
    ranks = two_ranks('bcn_sync_bn')

    n, _, _, h, w = BCN_SHAPE
    tol = rounding_tol(torch.float32, n * h * w)
    for key, ref in (('out', out), ('grad_input', xg.grad)):
        record(key, rel_error(torch.cat([r[key] for r in ranks]), ref.cpu()),
               tol=tol)
    for key, p in whole.named_parameters():
        record(f'grad {key}', rel_error(sum(r['params'][key] for r in ranks),
                                        p.grad.cpu()), tol=tol)
    for key in ('running_mean', 'running_var'):
        for rank, r in enumerate(ranks):
            record(f'rank {rank} {key}', rel_error(
                r[key], getattr(whole.pbn, key).cpu()), tol=tol)
    record.check()


# ------------------------------------------------------------------ training
@pytest.mark.e2e
@pytest.mark.parametrize('scope', sorted(devkit.DEMO_CONFIGS))
@pytest.mark.parametrize('device', DEVICES)
def test_demo_model_trains_a_step(device, scope, demo_data, tmp_path,
                                  run_tool, record):
    """One training iteration of the GN+WS demo config of ``scope`` with
    tools/train.py in a subprocess, with --amp on CUDA (in float32 on CPU,
    where the toolboxes refuse --amp): it exits 0, logs a finite positive
    loss, and its checkpoint holds the optimizer wrapper's loss scaler with
    --amp, none without."""
    if scope == 'mmpretrain':
        pytest.importorskip('mmpretrain.models', exc_type=ImportError,
                            reason='mmpretrain is not installed: it runs '
                            "in .venv-oldest (torchvision has no CPU build "
                            "for .venv's torch, docs/environments.md)")
    if scope == 'mmaction':
        pytest.importorskip('mmaction', reason='mmaction2 is not installed: '
                            'it runs in .venv (docs/environments.md)')
    amp = device == 'cuda'
    work_dir = tmp_path / 'work'
    options = dict(devkit.demo_data_options(scope, demo_data.root), **{
        'train_cfg.max_iters': 1, 'train_cfg.val_begin': 2,
        'default_hooks.logger.interval': 1})
    proc = run_tool([sys.executable, 'tools/train.py',
                     devkit.DEMO_CONFIGS[scope], '--work-dir', str(work_dir),
                     *(['--amp'] if amp else []), '--cfg-options',
                     *devkit.cfg_options(options)],
                    # on CPU the step must not find a GPU the machine has
                    env={} if amp else {'CUDA_VISIBLE_DEVICES': ''})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    losses = [entry['loss'] for entry in devkit.read_scalars(work_dir)
              if 'loss' in entry]
    assert losses, 'no loss logged'
    record('loss', losses[-1])
    assert all(math.isfinite(loss) and loss > 0 for loss in losses), losses
    optimizer = torch.load(work_dir / 'iter_1.pth', map_location='cpu',
                           weights_only=False)['optimizer']
    if amp:
        assert 'loss_scaler' in optimizer, 'no loss scaler: not AMP'
        record('loss scale', optimizer['loss_scaler'].get('scale'))
    else:
        assert 'loss_scaler' not in optimizer


# ---------------------------------------------------- speed and peak memory
@pytest.fixture
def speed(request):
    """Rounds and seconds per candidate per round of the timing
    (``--speed-rounds``, ``--speed-min-seconds``)."""
    return (request.config.getoption('--speed-rounds'),
            request.config.getoption('--speed-min-seconds'))


def synced(step):
    """``step`` timed to its end: CUDA runs asynchronously."""
    def run():
        step()
        torch.cuda.synchronize()
    return run


def cuda_peak_mb(step):
    """Growth of CUDA's allocated memory during one call of ``step``."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def time_ratios(bench, speed, steps, pairs):
    """The steps timed interleaved (benchmark_speed.time_side_by_side);
    for each ``(name, base)`` of ``pairs`` the ratio of their times as
    median, min and max over the rounds (benchmark_speed.round_ratios)."""
    samples = bench.time_side_by_side({k: synced(s) for k, s in steps.items()},
                                      *speed)
    return {f'{name} / {base} time': dict(zip(
        ('median', 'min', 'max'),
        bench.round_ratios(samples[name], samples[base])))
        for name, base in pairs}


def memory_ratios(steps, pairs):
    peaks = {k: cuda_peak_mb(s) for k, s in steps.items()}
    return {f'{name} / {base} peak memory': peaks[name] / peaks[base]
            for name, base in pairs}


def record_all(record, label, values):
    """Record ``values`` under ``label``; all finite and positive, and a
    time ratio's median within its range."""
    for key, value in values.items():
        record(f'{label} {key}', value)
        for number in (value.values() if isinstance(value, dict)
                       else [value]):
            assert math.isfinite(number) and number > 0, (label, key, value)
        if isinstance(value, dict):
            assert value['min'] <= value['median'] <= value['max'], (label,
                                                                    key)


@pytest.mark.gpu
def test_conv_speed_and_memory(bench, speed, record):
    """mmcv's and ws_mm's ConvWS2d and timm's StdConv2d against a plain conv,
    and ws_mm's at timm's variant against timm's, at benchmark_speed's
    CONV_SHAPES, training step (forward + backward: time and peak memory)
    and inference (time)."""
    pairs = [('ws_mm ConvWS2d', 'conv'), ('mmcv ConvWS2d', 'conv'),
             ('timm StdConv2d', 'conv'),
             ('ws_mm ConvWS2d C', 'timm StdConv2d')]
    for shape in bench.CONV_SHAPES:
        layers, x = bench.conv_layers(shape, 'cuda')
        label = '{1}->{2} {3}x{3} on {0}x{4}x{5}'.format(*shape)
        for mode, make in (('train', bench.train_step),
                           ('eval', bench.eval_step)):
            for layer in layers.values():
                layer.train(mode == 'train')
            steps = {k: make(m, x) for k, m in layers.items()}
            record_all(record, f'{label} {mode}',
                       time_ratios(bench, speed, steps, pairs))
            if mode == 'train':
                record_all(record, f'{label} {mode}',
                           memory_ratios(steps, pairs))


@pytest.mark.gpu
def test_norm_speed_and_memory(bench, speed, record):
    """BCN in batch and in estimate mode against GN at benchmark_speed's
    NORM_SHAPES, training step (time and peak memory) and inference (time);
    and in training BCN's fused form, which the layer runs on CPU only,
    against the two stages it runs on a GPU (layers.FUSED)."""
    pairs = [('BCN batch', 'GN'), ('BCN estimate', 'GN')]
    fused = ('BCN estimate fused', 'BCN estimate')
    for n, c, h, w in bench.NORM_SHAPES:
        layers = {'GN': nn.GroupNorm(32, c).cuda(),
                  'BCN batch': BatchChannelNorm(c, 32, mode='batch').cuda(),
                  'BCN estimate': BatchChannelNorm(c, 32,
                                                   mode='estimate').cuda()}
        x = torch.randn(n, c, h, w, device='cuda', requires_grad=True)
        for mode, make in (('train', bench.train_step),
                           ('eval', bench.eval_step)):
            for layer in layers.values():
                layer.train(mode == 'train')
            steps = {k: make(m, x) for k, m in layers.items()}
            label = f'{n}x{c}x{h}x{w} {mode}'
            if mode == 'eval':
                record_all(record, label,
                           time_ratios(bench, speed, steps, pairs))
                continue
            steps[fused[0]] = bench.fused(steps[fused[1]])
            record_all(record, label,
                       time_ratios(bench, speed, steps, pairs + [fused]))
            record_all(record, label, memory_ratios(steps, pairs + [fused]))


@pytest.mark.gpu
def test_model_speed_and_memory(bench, speed, record):
    """A training iteration of benchmark_speed's MODELS (2 images,
    MODEL_SIZE) with GN+WS against GN, and BCN+WS against GN+WS: time and
    peak memory."""
    pairs = [('GN+WS', 'GN'), ('BCN+WS', 'GN+WS')]
    for name in bench.MODELS:
        steps = {}
        for norm in ('GN', 'GN+WS', 'BCN+WS'):
            model, data = bench.build_model(name, norm, MODEL_SIZE, 'cuda')
            model.train()
            steps[norm] = bench.model_step(model, data, 'train')
        label = f'{name} {MODEL_SIZE}x{MODEL_SIZE}, 2 images'
        record_all(record, label, time_ratios(bench, speed, steps, pairs))
        record_all(record, label, memory_ratios(steps, pairs))
        del steps, model, data  # before the next model is built
