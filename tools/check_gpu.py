"""Check ws_mm on a CUDA GPU in one command: exactness, mixed precision, the
compiled kernels, BCN, training steps of the demo models, and speed.

    python tools/check_gpu.py                     # every check, on cuda
    python tools/check_gpu.py --only ws-mmcv autocast-fp16
    python tools/check_gpu.py --device cpu        # the checks a CPU can run

Each check passes, fails or is skipped with its reason; the speed checks
report ratios and peak memory (status ``info``). Every measured value goes to
a JSON report with its tolerance (``--out``, default under
``work_dirs/check_gpu/``), and a short table to stdout. Exit status 1 if any
check failed. Without a CUDA GPU (and without ``--device cpu``) it says so
and exits 0. About 5 minutes on one GPU.

Errors are normwise: ``max|result - reference| / max|reference|``.
"""
import argparse
import contextlib
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmark_speed import (CONV_SHAPES, MODELS, build_model, conv_layers,
                             eval_step, model_step, round_ratios,
                             time_side_by_side, train_step)
from mmcv.cnn.bricks.conv_ws import ConvWS2d as MMCVConvWS2d

import ws_mm
from ws_mm.functional import set_compile, weight_standardization
from ws_mm.functional.fusion import _TORCH_COMPILES, compile_mode
from ws_mm.layers import BatchChannelNorm, ConvWS2d
from ws_mm.toolbox.demo_data import (DEMO_CONFIGS, as_cfg_options,
                                     data_root_options)
from ws_mm.toolbox.launch import destroy_process_group

ROOT = Path(__file__).resolve().parents[1]

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


class Skip(Exception):
    """A check that cannot run here; the message says why."""


class Bounds:
    """Measured values against their tolerances (scaled by ``--tol-scale``);
    the check passes when every value is within its tolerance."""

    def __init__(self, scale):
        self.scale = scale
        self.values = {}

    def at_most(self, key, value, tol):
        self.values[key] = dict(value=float(value),
                                tol=float(tol) * self.scale)

    def result(self, **extra):
        # `not value <= tol` also catches NaN.
        failed = [k for k, v in self.values.items()
                  if not v['value'] <= v['tol']]
        if failed:
            v = self.values[failed[0]]
            summary = (f'{len(failed)} of {len(self.values)} over tolerance, '
                       f"{failed[0]}: {v['value']:.3g} > {v['tol']:.3g}")
        else:
            key, v = max(self.values.items(),
                         key=lambda kv: kv[1]['value'] / kv[1]['tol']
                         if kv[1]['tol'] else 0)  # within a 0 tol: 0 itself
            summary = f"worst {key}: {v['value']:.3g} <= {v['tol']:.3g}"
        return dict(status='fail' if failed else 'pass', summary=summary,
                    values=dict(self.values, **extra))


def rel_error(result, reference):
    reference = reference.double()
    return ((result.double() - reference).abs().max() /
            reference.abs().max()).item()


def rounding_tol(dtype, n):
    """Normwise error allowed for results that are sums of up to ``n``
    rounded terms: about eps * sqrt(n) of the terms' magnitudes (rounding
    errors of random sign add up like a random walk), with a margin of 4;
    the largest result is about that magnitude, or more."""
    return 4 * torch.finfo(dtype).eps * math.sqrt(n)


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


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


def exact_layers(shape, device, dtype, cls):
    """A conv of class ``cls`` for an EXACT_SHAPES entry."""
    n, cin, cout, k, stride, dilation, groups, h, w = shape
    return cls(cin, cout, k, stride=stride, padding=dilation * (k // 2),
               dilation=dilation, groups=groups).to(device, dtype)


def check_ws_mmcv(ctx):
    """ws_mm's ConvWS2d against mmcv's, forward and backward. The reference
    is mmcv's in float64. float64: within rounding_tol. float32: ws_mm's
    error no more than 3x mmcv's own (plus one ulp); both convolve in the
    same precision (TF32 where enabled), so only the WS arithmetic differs."""
    bounds = Bounds(ctx.tol_scale)
    for shape in EXACT_SHAPES:
        n, cin, cout, k, stride, _, groups, h, w = shape
        torch.manual_seed(0)
        # Made in float32, so that every precision sees the same numbers.
        reference = small_spread_weight(exact_layers(
            shape, ctx.device, torch.float32, MMCVConvWS2d)).double()
        x = torch.randn(n, cin, h, w, device=ctx.device).double()
        grad_out = torch.randn_like(reference(x).float()).double()
        ref = conv_results(reference, x, grad_out)
        longest = max(cin // groups * k * k, cout // groups * k * k,
                      ref['out'][0, 0].numel() * n)
        label = f'{cin}->{cout} {k}x{k}/{stride} g{groups}'
        for dtype in (torch.float64, torch.float32):
            errors = {}
            for name, cls in (('mmcv', MMCVConvWS2d), ('ws_mm', ConvWS2d)):
                layer = exact_layers(shape, ctx.device, dtype, cls)
                layer.load_state_dict(reference.state_dict())
                got = conv_results(layer, x.to(dtype), grad_out.to(dtype))
                errors[name] = {k: rel_error(v, ref[k])
                                for k, v in got.items()}
            for key, error in errors['ws_mm'].items():
                if dtype == torch.float64:
                    tol = rounding_tol(dtype, longest)
                else:
                    tol = (3 * errors['mmcv'][key] +
                           torch.finfo(dtype).eps)
                bounds.at_most(f'{label} {str(dtype)[6:]} {key}', error, tol)
    return bounds.result(tf32=torch.backends.cudnn.allow_tf32
                         if ctx.device.type == 'cuda' else None)


def magnitudes(x, w_hat, bias, grad_out, conv_args):
    """The sums of |terms| behind each result of a conv: the same conv and
    its backward on absolute values, in float64."""
    x, w_hat = x.double().abs().requires_grad_(), w_hat.double().abs()
    w_hat.requires_grad_()
    bias = bias.double().abs().requires_grad_()
    out = F.conv2d(x, w_hat, bias, **conv_args)
    grads = torch.autograd.grad(out, (x, w_hat, bias), grad_out.double().abs())
    return dict(zip(('out', 'grad_input', 'grad_weight', 'grad_bias'),
                    (out.detach(), *grads)))


def float32_conv_results(layer, x, grad_out):
    """:func:`conv_results` in float32 proper: TF32 (on by default for
    cuDNN convs) rounds as coarsely as float16."""
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        return conv_results(layer, x, grad_out)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


def check_autocast(ctx, dtype):
    """ConvWS2d under autocast against float32 (without TF32), forward and
    backward: the results finite, in ``dtype``, and each within 2 eps of its
    terms' magnitude, the worst-case error of rounding both factors of every
    product and the result to ``dtype`` (sums in float32). The weight
    gradient per filter: WS's backward scales by 1 / (std + eps) a
    projection, which does not lengthen a vector."""
    device = ctx.device
    if (dtype == torch.bfloat16 and device.type == 'cuda'
            and torch.cuda.get_device_capability(device) < (8, 0)):
        raise Skip('bfloat16 needs a GPU of compute capability 8.0 or more')
    bounds = Bounds(ctx.tol_scale)
    eps = torch.finfo(dtype).eps
    for shape in EXACT_SHAPES:
        n, cin, _, k, stride, dilation, groups, h, w = shape
        torch.manual_seed(0)
        layer = small_spread_weight(
            exact_layers(shape, device, torch.float32, ConvWS2d))
        x = torch.randn(n, cin, h, w, device=device)
        grad_out = torch.randn_like(layer(x))
        ref = float32_conv_results(layer, x, grad_out)
        # autocast warns of a dtype it does not support, and stays off
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', UserWarning)
            with torch.autocast(device.type, dtype=dtype):
                got = conv_results(layer, x, grad_out)
        if got['out'].dtype != dtype:
            raise Skip(f'autocast on {device.type} does not run {dtype} convs '
                       f'in torch {torch.__version__}')
        weight = layer.weight.detach().double()
        mags = magnitudes(x, weight_standardization(weight),
                          layer.bias.detach(), grad_out,
                          dict(stride=stride, dilation=dilation,
                               padding=dilation * (k // 2), groups=groups))
        label = f'{cin}->{layer.out_channels} {k}x{k}/{stride} g{groups}'
        for key, value in got.items():
            bounds.at_most(f'{label} {key} non-finite',
                           (~value.isfinite()).sum().item(), 0)
            error = (value.double() - ref[key].double()).abs()
            if key == 'grad_weight':
                std = weight.flatten(1).std(1) + layer.ws_spec.eps
                error = error.flatten(1).norm(dim=1) * std
                mag = mags[key].flatten(1).norm(dim=1)
            else:
                mag = mags[key]
            # a result with no terms (an input a stride skips) must be exact
            ratio = error / (eps * mag).clamp_min(torch.finfo(mag.dtype).tiny)
            bounds.at_most(f'{label} {key} error/(eps*magnitude)',
                           ratio.max().item(), 2)
    return bounds.result()


def check_compile(ctx):
    """WS's backward with its kernel compiled (Triton on GPUs, C++ on CPU)
    against eager, in float32 at the weights of CONV_SHAPES (each once);
    the reference is the eager kernel in float64. The compiled kernel adds
    its sums in another order: its error may be no more than 3x eager's
    (plus one ulp), where a wrong kernel is off by the gradient's own size.
    A compiler failure (ws_mm then falls back to eager with a warning) fails
    the check."""
    if not _TORCH_COMPILES:
        raise Skip(f'torch {torch.__version__} < 2.4: ws_mm runs its kernels '
                   'eagerly')
    bounds = Bounds(ctx.tol_scale)
    before = compile_mode()
    try:
        for cout, cin, k in dict.fromkeys((s[2], s[1], s[3])
                                          for s in CONV_SHAPES):
            torch.manual_seed(0)
            w = torch.randn(cout, cin, k, k, device=ctx.device) * 0.02
            grad_out = torch.randn_like(w)
            grads = {}
            for mode, dtype in (('always', torch.float32),
                                ('never', torch.float32),
                                ('never', torch.float64)):
                set_compile(mode)
                wd = w.to(dtype).requires_grad_()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter('always', RuntimeWarning)
                    (grads[mode, dtype], ) = torch.autograd.grad(
                        weight_standardization(wd), wd, grad_out.to(dtype))
                failures = [str(c.message) for c in caught
                            if 'torch.compile failed' in str(c.message)]
                if failures:
                    return dict(status='fail', summary=failures[0][:200],
                                values={})
            ref = grads['never', torch.float64]
            eager = rel_error(grads['never', torch.float32], ref)
            bounds.at_most(f'{cout}x{cin}x{k}x{k} compiled error',
                           rel_error(grads['always', torch.float32], ref),
                           3 * eager + torch.finfo(torch.float32).eps)
    finally:
        set_compile(before)
    return bounds.result()


def reference_bcn(x, bcn):
    """BCN in batch mode written from its formulas in float64: per channel
    ``(x - mean) / sqrt(var + eps)`` with the batch's mean and biased
    variance, the per-channel affine, then per sample and group the same
    with the group's statistics and the per-group affine."""
    x = x.double()
    dims = [0] + list(range(2, x.dim()))
    mean, var = x.mean(dims), x.var(dims, unbiased=False)
    shape = (1, -1) + (1, ) * (x.dim() - 2)
    pbn = bcn.pbn
    y = (x - mean.view(shape)) / (var.view(shape) + bcn.eps).sqrt()
    y = y * pbn.weight.double().view(shape) + pbn.bias.double().view(shape)
    groups = y.reshape(x.size(0), bcn.num_groups, -1)
    g_mean = groups.mean(2, keepdim=True)
    g_var = groups.var(2, unbiased=False, keepdim=True)
    groups = (groups - g_mean) / (g_var + bcn.eps).sqrt()
    groups = groups * bcn.weight.double() + bcn.bias.double()
    return groups.reshape(x.shape)


def bcn_input(device):
    n, c, _, h, w = BCN_SHAPE
    torch.manual_seed(0)
    offsets, spreads = torch.randn(c, 1, 1) * 3, torch.rand(c, 1, 1) * 4 + 0.1
    return (torch.randn(n, c, h, w) * spreads + offsets).to(device)


def random_bcn(mode, device, dtype, **kwargs):
    """A BCN with affine parameters away from 1 and 0, so that they count."""
    _, c, groups, _, _ = BCN_SHAPE
    bcn = BatchChannelNorm(c, groups, mode=mode, **kwargs)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in bcn.parameters():
            p.copy_(torch.randn_like(p) * 0.5 + 1)
    return bcn.to(device, dtype)


def check_bcn_modes(ctx):
    """BCN's batch mode and estimate mode against a float64 reference, on
    one batch: batch mode in training (forward, and the input gradient);
    estimate mode's first training batch, which it normalizes by that
    batch's own statistics (and keeps them as its estimates); estimate mode
    in evaluation with the estimates set to the batch's statistics. All
    three are the same function of that batch. float64 within rounding_tol,
    float32 likewise, over the longest statistic (a channel's N*H*W)."""
    bounds = Bounds(ctx.tol_scale)
    x = bcn_input(ctx.device)
    n, c, _, h, w = BCN_SHAPE
    for dtype in (torch.float64, torch.float32):
        tol = rounding_tol(dtype, n * h * w)
        tag = str(dtype)[6:]
        batch = random_bcn('batch', ctx.device, dtype).train()
        xd = x.to(dtype).requires_grad_()
        out = batch(xd)
        grad_out = torch.randn_like(out)
        (grad, ) = torch.autograd.grad(out, xd, grad_out)
        x64 = x.double().requires_grad_()
        ref = reference_bcn(x64, batch)
        (ref_grad, ) = torch.autograd.grad(ref, x64, grad_out.double())
        bounds.at_most(f'{tag} batch mode', rel_error(out, ref), tol)
        bounds.at_most(f'{tag} batch mode grad_input',
                       rel_error(grad, ref_grad), tol)

        estimate = random_bcn('estimate', ctx.device, dtype).train()
        first = estimate(x.to(dtype))
        bounds.at_most(f'{tag} estimate mode, first batch',
                       rel_error(first, ref), tol)
        dims = (0, 2, 3)
        bounds.at_most(f'{tag} estimates = batch mean',
                       rel_error(estimate.pbn.running_mean,
                                 x.double().mean(dims)), tol)
        bounds.at_most(f'{tag} estimates = batch variance',
                       rel_error(estimate.pbn.running_var,
                                 x.double().var(dims, unbiased=False)), tol)

        fresh = random_bcn('estimate', ctx.device, dtype).eval()
        with torch.no_grad():
            fresh.pbn.running_mean.copy_(x.double().mean(dims))
            fresh.pbn.running_var.copy_(x.double().var(dims, unbiased=False))
            evaluated = fresh(x.to(dtype))
        bounds.at_most(f'{tag} estimate mode eval = batch mode',
                       rel_error(evaluated, out), tol)
    return bounds.result()


def _sync_bcn_worker(rank, folder, x, grad_out, state):
    """One of 2 ranks: BCN(sync_bn=True) on its half of the batch."""
    import torch.distributed as dist
    torch.cuda.set_device(rank)
    dist.init_process_group('nccl', init_method=f'file://{folder}/store',
                            rank=rank, world_size=2,
                            timeout=timedelta(seconds=120))
    try:
        _, c, groups, _, _ = BCN_SHAPE
        bcn = BatchChannelNorm(c, groups, mode='batch', sync_bn=True)
        bcn.load_state_dict(state)
        bcn.cuda(rank).train()
        part = x.chunk(2)[rank].cuda(rank).requires_grad_()
        out = bcn(part)
        out.backward(grad_out.chunk(2)[rank].cuda(rank))
        torch.save(dict(out=out.detach().cpu(), grad_input=part.grad.cpu(),
                        params={k: p.grad.cpu()
                                for k, p in bcn.named_parameters()},
                        running_mean=bcn.pbn.running_mean.cpu(),
                        running_var=bcn.pbn.running_var.cpu()),
                   f'{folder}/rank{rank}.pt')
    finally:
        destroy_process_group()


def check_bcn_sync(ctx):
    """BCN(mode='batch', sync_bn=True) on 2 GPUs (2 processes, nccl), half
    the batch each, against one process in batch mode on the whole batch:
    outputs and input gradients (concatenated), parameter gradients
    (summed over the ranks), running statistics; float32 within
    rounding_tol over a channel's N*H*W."""
    if ctx.device.type != 'cuda' or torch.cuda.device_count() < 2:
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise Skip(f'needs 2 CUDA GPUs (nccl), {visible} visible')
    import torch.multiprocessing as mp
    bounds = Bounds(ctx.tol_scale)
    x = bcn_input(ctx.device)
    whole = random_bcn('batch', ctx.device, torch.float32).train()
    # before the forward, which updates the running statistics
    state = {k: v.cpu().clone() for k, v in whole.state_dict().items()}
    xg = x.clone().requires_grad_()
    out = whole(xg)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_sync_bcn_worker, nprocs=2,
                 args=(folder, x.cpu(), grad_out.cpu(), state))
        ranks = [torch.load(f'{folder}/rank{r}.pt') for r in range(2)]
    n, _, _, h, w = BCN_SHAPE
    tol = rounding_tol(torch.float32, n * h * w)
    for key, ref in (('out', out), ('grad_input', xg.grad)):
        bounds.at_most(key, rel_error(torch.cat([r[key] for r in ranks]),
                                      ref.cpu()), tol)
    for key, p in whole.named_parameters():
        bounds.at_most(f'grad {key}', rel_error(
            sum(r['params'][key] for r in ranks), p.grad.cpu()), tol)
    for key in ('running_mean', 'running_var'):
        for rank, r in enumerate(ranks):
            bounds.at_most(f'rank {rank} {key}', rel_error(
                r[key], getattr(whole.pbn, key).cpu()), tol)
    return bounds.result()


def demo_data(ctx):
    """A small demo data set in the run's temporary folder, made once."""
    root = Path(ctx.tmp) / 'demo_data'
    if not root.exists():
        import make_demo_data
        with contextlib.redirect_stdout(io.StringIO()):
            make_demo_data.main(['--out', str(root), '--size', '128',
                                 '--num-train', '4', '--num-val', '1'])
    return root


def check_train(ctx, scope):
    """One training iteration of the GN+WS demo config of ``scope`` with
    tools/train.py in a subprocess, with --amp on CUDA (float32 on CPU,
    where the toolboxes refuse --amp): it exits 0, logs a finite loss, and
    its checkpoint holds the optimizer wrapper's loss scaler where --amp."""
    amp = ctx.device.type == 'cuda'
    work_dir = Path(ctx.tmp) / f'train_{scope}'
    options = dict(data_root_options(scope, demo_data(ctx)), **{
        'train_cfg.max_iters': 1, 'train_cfg.val_begin': 2,
        'default_hooks.logger.interval': 1})
    args = [sys.executable, str(ROOT / 'tools/train.py'),
            str(ROOT / DEMO_CONFIGS[scope]), '--work-dir', str(work_dir),
            *(['--amp'] if amp else []), '--cfg-options',
            *as_cfg_options(options)]
    # On CPU the step must not find a GPU the machine may have.
    env = dict(os.environ, **({} if amp else {'CUDA_VISIBLE_DEVICES': ''}))
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True,
                          text=True)
    if proc.returncode:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:]
        return dict(status='fail', summary=f'exit {proc.returncode}: '
                    f'{tail[0][:200] if tail else ""}',
                    values=dict(output=(proc.stdout + proc.stderr)[-4000:]))
    logged = [json.loads(line) for scalars in
              work_dir.glob('*/vis_data/scalars.json')
              for line in scalars.read_text().splitlines()]
    losses = [entry['loss'] for entry in logged if 'loss' in entry]
    optimizer = torch.load(work_dir / 'iter_1.pth', map_location='cpu',
                           weights_only=False)['optimizer']
    scaler = 'loss_scaler' in optimizer
    values = dict(loss=losses[-1] if losses else None, amp=amp,
                  loss_scaler=scaler)
    problems = [text for wrong, text in (
        (not losses, 'no loss logged'),
        (not all(map(math.isfinite, losses)), f'loss {losses}'),
        (amp and not scaler, 'no loss scaler in the checkpoint: not AMP'))
        if wrong]
    if problems:
        return dict(status='fail', summary='; '.join(problems), values=values)
    return dict(status='pass', values=values, summary=f'loss {losses[-1]:.3f}'
                f", {'--amp' if amp else 'float32 (--amp: CUDA only)'}")


def synced(step, device):
    """``step`` timed to its end: CUDA runs asynchronously."""
    def run():
        step()
        sync(device)
    return run


def cuda_peak_mb(step, device):
    """Growth of CUDA's allocated memory during one call of ``step``."""
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def timed(steps, ctx, base):
    """Ratios of each step's time to ``base``'s (median, min, max over the
    interleaved rounds of benchmark_speed.time_side_by_side), and ``base``'s
    median time."""
    samples = time_side_by_side(
        {k: synced(s, ctx.device) for k, s in steps.items()}, ctx.rounds,
        ctx.min_seconds)
    values = {f'{k} / {base} time': dict(zip(
        ('median', 'min', 'max'), round_ratios(samples[k], samples[base])))
        for k in steps if k != base}
    values[f'{base} ms'] = 1e3 * statistics.median(samples[base])
    return values


def memory_ratios(peaks, base):
    values = {f'{k} / {base} peak memory': peaks[k] / peaks[base]
              for k in peaks if k != base}
    values[f'{base} peak MB'] = peaks[base]
    return values


def check_speed_layers(ctx):
    """WS convs (mmcv's and ws_mm's) against a plain conv at CONV_SHAPES,
    training step (forward + backward) and inference; time ratios, and on
    CUDA peak-memory ratios of the training step."""
    values = {}
    for shape in CONV_SHAPES:
        layers, x = conv_layers(shape, ctx.device)
        label = '{1}->{2} {3}x{3} on {0}x{4}x{5}'.format(*shape)
        for mode, make in (('train', train_step), ('eval', eval_step)):
            for layer in layers.values():
                layer.train(mode == 'train')
            steps = {k: make(m, x) for k, m in layers.items()}
            row = timed(steps, ctx, 'conv')
            if mode == 'train' and ctx.device.type == 'cuda':
                row.update(memory_ratios({k: cuda_peak_mb(s, ctx.device)
                                          for k, s in steps.items()}, 'conv'))
            values[f'{label} {mode}'] = row
    return info(values, 'ws_mm ConvWS2d / conv time')


def check_speed_models(ctx):
    """A training iteration of the benchmark's models (benchmark_speed
    MODELS) with GN+WS against GN: time ratio, and on CUDA peak-memory
    ratio. (On CPU, tools/benchmark_speed.py --only model measures memory,
    in fresh processes: minutes.)"""
    values = {}
    for name in MODELS:
        built = {norm: build_model(name, norm, ctx.size, ctx.device)
                 for norm in ('GN', 'GN+WS')}
        steps = {}
        for norm, (model, data) in built.items():
            model.train()
            steps[norm] = model_step(model, data, 'train')
        row = timed(steps, ctx, 'GN')
        if ctx.device.type == 'cuda':
            row.update(memory_ratios({k: cuda_peak_mb(s, ctx.device)
                                      for k, s in steps.items()}, 'GN'))
        values[f'{name} {ctx.size}x{ctx.size}, 2 images'] = row
        del built, steps  # before the next model is built
    return info(values, 'GN+WS / GN time')


def info(values, headline):
    """A speed result; the summary shows ``headline``'s median range."""
    medians = [row[headline]['median'] for row in values.values()]
    return dict(status='info', values=values,
                summary=f'{headline} {min(medians):.2f}-{max(medians):.2f}x')


# In this order: the compile check first, so that it sees the compiler's
# first attempt in this process (ws_mm falls back to eager for good after a
# failure, and on CUDA every WS backward compiles by default).
CHECKS = {
    'compile': check_compile,
    'ws-mmcv': check_ws_mmcv,
    'autocast-fp16': lambda ctx: check_autocast(ctx, torch.float16),
    'autocast-bf16': lambda ctx: check_autocast(ctx, torch.bfloat16),
    'bcn-modes': check_bcn_modes,
    'bcn-sync': check_bcn_sync,
    'train-det': lambda ctx: check_train(ctx, 'mmdet'),
    'train-seg': lambda ctx: check_train(ctx, 'mmseg'),
    'speed-layers': check_speed_layers,
    'speed-models': check_speed_models,
}


def run_check(name, ctx):
    start = time.perf_counter()
    try:
        result = CHECKS[name](ctx)
    except Skip as reason:
        result = dict(status='skip', summary=str(reason), values={})
    except Exception as error:  # noqa: BLE001 - a crash fails this check only
        traceback.print_exc()
        result = dict(status='fail', values={},
                      summary=f'{type(error).__name__}: {str(error)[:200]}')
    result['seconds'] = round(time.perf_counter() - start, 1)
    return result


def environment(device):
    import mmcv
    env = dict(device=str(device), torch=torch.__version__,
               mmcv=mmcv.__version__, ws_mm=ws_mm.__version__,
               python=sys.version.split()[0])
    if device.type == 'cuda':
        env.update(gpu=torch.cuda.get_device_name(device),
                   gpus_visible=torch.cuda.device_count(),
                   cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    return env


def table(results):
    width = max(map(len, results))
    lines = [f'{"check":{width}}  status  seconds  summary']
    for name, r in results.items():
        lines.append(f'{name:{width}}  {r["status"]:6}  {r["seconds"]:7.1f}  '
                     f'{r["summary"]}')
    return '\n'.join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', choices=['cuda', 'cpu'],
                        help='default: cuda where there is a CUDA GPU')
    parser.add_argument('--only', nargs='+', choices=list(CHECKS),
                        default=list(CHECKS), metavar='CHECK',
                        help=f'checks to run, of: {", ".join(CHECKS)}')
    parser.add_argument('--out', type=Path,
                        help='the JSON report (default: work_dirs/check_gpu/'
                        'report_<device>_<time>.json)')
    parser.add_argument('--tol-scale', type=float, default=1.0,
                        help='multiply every tolerance, e.g. 0.5 to see the '
                        'margins')
    parser.add_argument('--rounds', type=int, default=5,
                        help='interleaved timing rounds of the speed checks')
    parser.add_argument('--min-seconds', type=float, default=0.1,
                        help='time per candidate per round')
    parser.add_argument('--size', type=int, default=320,
                        help='image size of speed-models')
    args = parser.parse_args(argv)
    if (args.tol_scale < 0 or args.rounds < 1 or args.min_seconds < 0
            or args.size < 32):
        parser.error('--tol-scale and --min-seconds must be >= 0, --rounds '
                     '>= 1, --size >= 32')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA GPU is visible to torch '
                     f'{torch.__version__}')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.device is None and not torch.cuda.is_available():
        print('check_gpu: no CUDA GPU here, nothing checked (--device cpu '
              'runs the checks a CPU can run)')
        return 0
    args.device = torch.device('cuda', 0) if args.device in (None, 'cuda') \
        else torch.device('cpu')
    stamp = datetime.now().strftime('%Y%m%d_%H%M%S')
    out = args.out or (ROOT / 'work_dirs/check_gpu' /
                       f'report_{args.device.type}_{stamp}.json')
    start = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as args.tmp:
        for name in CHECKS:
            if name in args.only:
                results[name] = run_check(name, args)
                print(f'{name}: {results[name]["status"]}', file=sys.stderr,
                      flush=True)
    report = dict(environment(args.device), started=stamp,
                  seconds=round(time.perf_counter() - start, 1),
                  tol_scale=args.tol_scale, checks=results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str) + '\n')
    print(table(results))
    failed = [name for name, r in results.items() if r['status'] == 'fail']
    listed = f' ({", ".join(failed)})' if failed else ''
    print(f'{len(failed)} failed{listed}; report: {out}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
