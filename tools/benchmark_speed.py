"""Speed and memory of WS and BCN against their plain counterparts.

Every candidate is timed side by side in one run, interleaved round by round,
and reported as a ratio to the baseline of its table: the median over rounds
of the ratio within each round, with the range of those ratios, so machine
noise and drift cancel out as far as they can and what remains is shown.
Absolute times (the baseline's median) are printed for reference only.

    python tools/benchmark_speed.py                  # all tables, 2 threads
    python tools/benchmark_speed.py --only conv norm # the layer tables
    python tools/benchmark_speed.py --only model --models 'DeepLabV3 R-50-D8'
    python tools/benchmark_speed.py --out docs/speed_tables.md

Tables: ``conv``, WS convs vs a plain conv at the conv shapes of Mask R-CNN
R-50-FPN on one 800x1333 image: mmcv's ConvWS2d, ours, timm's StdConv2d
(written out: ``TimmStdConv2d``) and ours at timm's variant (also against
timm's), beside the floor of WS's memory traffic (``WeightTrafficConv``);
time, and the memory autograd keeps for the backward (``saved_bytes``);
``kernel``, WS's own work in a training step at those weights, timm's
against ours; ``norm``, BCN vs
GN vs BN, BCN estimate also forced to run as two stages;
``rule``, BCN's fused form against its two stages in training and eval, by row
length and size (where the layer should choose which); ``model``, one
training iteration and inference of
Mask R-CNN R-50-FPN and DeepLabV3 R-50-D8 with GN+WS vs GN vs BN vs BCN+WS
(also against GN+WS; inference: WS cached or folded), time and peak
memory (each variant measured in a fresh process, as the growth of its peak
resident memory over the built model), and the
share of a GN+WS training iteration that WS's own work takes
(torch.profiler).
"""
import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.conv_ws import ConvWS2d as MMCVConvWS2d
from torch import nn

from ws_mm import fold_weight_standardization
from ws_mm.functional import (batch_channel_norm, filter_rows,
                              get_ws_variant)
from ws_mm.functional.weight_standardization import (
    _restandardize_rows, _standardize_rows, _standardize_rows_backward,
    _workspace)
import ws_mm.layers.batch_channel_norm as bcn_layers
from ws_mm.layers import BatchChannelNorm, ConvWS2d

ROOT = Path(__file__).resolve().parents[1]

# (batch, in, out, kernel, height, width): ResNet-50 stages on one image,
# and the mask head's convs on 8 RoIs.
CONV_SHAPES = [
    (1, 256, 256, 3, 50, 84),
    (1, 512, 512, 3, 25, 42),
    (1, 1024, 256, 1, 50, 84),
    (1, 2048, 512, 1, 25, 42),
    (8, 256, 256, 3, 14, 14),
]
# (batch, channels, height, width): ResNet-50 stages on 2 images, the mask
# head on 8 RoIs and on 1, the box head's convs on one image's 512 RoIs.
NORM_SHAPES = [(2, 256, 50, 84), (2, 1024, 25, 42), (8, 256, 14, 14),
               (1, 256, 14, 14), (512, 256, 7, 7)]


def train_step(module, x):
    def run():
        module(x).sum().backward()
    return run


def eval_step(module, x):
    def run():
        with torch.no_grad():
            module(x)
    return run


def time_side_by_side(steps, rounds, min_seconds):
    """Seconds per call of each step in every round, measured interleaved.

    The order of the steps rotates from round to round, so that none always
    runs after the same neighbour (whose leftovers in caches and in the
    allocator would bias it).
    """
    calls = {}
    for name, step in steps.items():  # warm-up, and calls per round
        step()
        start = time.perf_counter()
        step()
        calls[name] = max(1, int(min_seconds / (time.perf_counter() - start)))
    samples = {name: [] for name in steps}
    names = list(steps)
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            for _ in range(calls[name]):
                steps[name]()
            samples[name].append((time.perf_counter() - start) / calls[name])
    return samples


class TimmStdConv2d(nn.Conv2d):
    """timm's ``StdConv2d`` (timm/layers/std_conv.py; Kolesnikov et al.'s BiT,
    after Qiao et al.), written out here: timm needs torchvision, which has
    no build for every torch this runs on. It standardizes the weight with
    ``F.batch_norm`` in training mode, the filters as channels (variant C:
    biased variance, eps 1e-6 inside the sqrt), and convolves; autograd
    differentiates both, keeping W_hat from the forward for the conv's
    backward."""

    def __init__(self, *args, eps=1e-6, **kwargs):
        super().__init__(*args, **kwargs)
        self.eps = eps

    @staticmethod
    def standardize(weight, eps=1e-6):
        return F.batch_norm(weight.reshape(1, weight.shape[0], -1), None, None,
                            training=True, momentum=0.,
                            eps=eps).reshape_as(weight)

    def forward(self, x):
        return F.conv2d(x, self.standardize(self.weight, self.eps), self.bias,
                        self.stride, self.padding, self.dilation, self.groups)


def conv_layers(shape, device='cpu'):
    """A plain conv and WS convs with the same weights, for a CONV_SHAPES
    entry, and an input that requires grad, on ``device``: mmcv's ConvWS2d,
    ours (variant A, the default), timm's StdConv2d and ours at timm's
    variant C."""
    n, cin, cout, k, h, w = shape
    torch.manual_seed(0)
    plain = nn.Conv2d(cin, cout, k, padding=k // 2)
    layers = {
        'conv': plain,
        'mmcv ConvWS2d': MMCVConvWS2d(cin, cout, k, padding=k // 2),
        'ws_mm ConvWS2d': ConvWS2d(cin, cout, k, padding=k // 2),
        'timm StdConv2d': TimmStdConv2d(cin, cout, k, padding=k // 2),
        'ws_mm ConvWS2d C': ConvWS2d(cin, cout, k, padding=k // 2,
                                     variant='C'),
    }
    for layer in layers.values():
        layer.load_state_dict(plain.state_dict())
    x = torch.randn(n, cin, h, w, device=device, requires_grad=True)
    return {name: layer.to(device) for name, layer in layers.items()}, x


# Ratios beside those to the conv: ours against timm's at the same variant,
# paired within each round.
CONV_PAIRS = [('ws_mm ConvWS2d C', 'timm StdConv2d')]


class _WeightTraffic(torch.autograd.Function):
    """Not WS: the weight-sized memory traffic a WS conv that keeps no second
    copy of W cannot avoid in training, without the arithmetic. The forward
    writes a copy of W for the conv (W_hat's place), the backward writes it
    again, then reads the weight gradient with it and writes the result (the
    closed form's place)."""

    @staticmethod
    def forward(ctx, x, weight, bias, buffer, conv_args):
        ctx.save_for_backward(x, weight)
        ctx.buffer, ctx.conv_args = buffer, conv_args
        return F.conv2d(x, buffer.copy_(weight), bias, *conv_args)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv_args
        w_copy = ctx.buffer.copy_(weight)
        need_bias = ctx.needs_input_grad[2]
        grad_x, grad_w, grad_bias = torch.ops.aten.convolution_backward(
            grad_out, x, w_copy, [w_copy.shape[0]], stride, padding, dilation,
            False, [0, 0], groups, [True, True, need_bias])
        return grad_x, grad_w.add_(w_copy), grad_bias, None, None


class WeightTrafficConv(nn.Conv2d):
    """A plain conv (zero padding given as numbers) with
    :class:`_WeightTraffic`'s memory traffic added in training: the floor
    that training step of a WS conv keeping no second copy of W can reach on
    the machine at hand. In eval a plain conv (ws_mm caches W_hat there)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer('w_copy', torch.empty_like(self.weight),
                             persistent=False)

    def forward(self, x):
        if not (self.training and torch.is_grad_enabled()):
            return super().forward(x)
        return _WeightTraffic.apply(
            x, self.weight, self.bias, self.w_copy,
            (self.stride, self.padding, self.dilation, self.groups))


def saved_bytes(module, x):
    """Bytes that autograd keeps from the forward of ``module(x)`` for its
    backward: the distinct storages of the saved tensors, less the input's
    and the parameters' (every candidate keeps those). Exact, and the same on
    every run."""
    everyones = {t.untyped_storage().data_ptr()
                 for t in (x, *module.parameters())}
    kept = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return sum(n for ptr, n in kept.items() if ptr not in everyones)


SAVED_TITLE = 'WS conv, memory kept from the forward for the backward'


def conv_tables(rounds, min_seconds):
    """conv_layers' candidates and the weight traffic floor at CONV_SHAPES:
    time of a training step and of inference, and :func:`saved_bytes` in
    training (with the weight's size)."""
    times, saved = [], []
    for n, cin, cout, k, h, w in CONV_SHAPES:
        layers, x = conv_layers((n, cin, cout, k, h, w))
        floor = WeightTrafficConv(cin, cout, k, padding=k // 2)
        floor.load_state_dict(layers['conv'].state_dict())
        layers['W traffic only'] = floor
        shape = f'{cin}->{cout} {k}x{k} on {n}x{h}x{w}'
        for mode, make in (('train', train_step), ('eval', eval_step)):
            for layer in layers.values():
                layer.train(mode == 'train')
            times.append((shape, mode, time_side_by_side(
                {name: make(m, x) for name, m in layers.items()}, rounds,
                min_seconds)))
        weight = layers['conv'].weight
        saved.append((shape, {name: saved_bytes(m.train(), x)
                              for name, m in layers.items()},
                      weight.numel() * weight.element_size()))
    return {'WS conv vs plain conv': times, SAVED_TITLE: saved}


def timm_work(weight, grad):
    """timm's WS in a training step of its conv: W_hat from F.batch_norm
    (kept for the conv's backward), and its backward to W."""
    weight = weight.detach().requires_grad_()

    def run():
        torch.autograd.grad(TimmStdConv2d.standardize(weight), weight, grad)
    return run


def ws_mm_work(weight, grad, variant):
    """What ws_mm's conv Function does in a training step besides the
    convolutions: W_hat into the reused buffer and its statistics (forward),
    W_hat again for the conv's backward, then the gradient w.r.t. W."""
    rows, variant = filter_rows(weight), get_ws_variant(variant)
    grad_rows = filter_rows(grad)

    def run():
        _, stats = _standardize_rows(rows, variant, out=_workspace(rows))
        _restandardize_rows(rows, stats, out=_workspace(rows))
        _standardize_rows_backward(grad_rows, rows, stats)
    return run


def kernel_tables(rounds, min_seconds):
    """WS's own work in a training step at the weights of CONV_SHAPES: timm's
    StdConv2d's against ours at its variant C and at our default A. timm's
    runs through autograd; ours calls its row functions directly, without
    the autograd Function around them (the conv table has that)."""
    rows = []
    for _, cin, cout, k, _, _ in CONV_SHAPES:
        torch.manual_seed(0)
        weight = torch.randn(cout, cin, k, k) * 0.02
        grad = torch.randn_like(weight)
        steps = {'timm': timm_work(weight, grad),
                 'ws_mm C': ws_mm_work(weight, grad, 'C'),
                 'ws_mm A': ws_mm_work(weight, grad, 'A')}
        rows.append((f'{cout}x{cin}x{k}x{k}', 'forward + backward',
                     time_side_by_side(steps, rounds, min_seconds)))
    return rows


def fused(step, value=True):
    """``step`` with BCN computing as one normalization (or, ``value=False``,
    as its two stages) whatever the device."""
    def run():
        default = bcn_layers.FUSED
        bcn_layers.FUSED = value
        try:
            step()
        finally:
            bcn_layers.FUSED = default
    return run


def two_stages(step):
    """``step`` with BCN computing as its two stages."""
    return fused(step, False)


def norm_tables(rounds, min_seconds):
    rows = []
    for n, c, h, w in NORM_SHAPES:
        layers = {
            'GN': nn.GroupNorm(32, c),
            'BN': nn.BatchNorm2d(c),
            'BCN batch': BatchChannelNorm(c, 32, mode='batch'),
            'BCN estimate': BatchChannelNorm(c, 32, mode='estimate'),
        }
        x = torch.randn(n, c, h, w, requires_grad=True)
        for mode, make in (('train', train_step), ('eval', eval_step)):
            for layer in layers.values():
                layer.train(mode == 'train')
            steps = {k: make(m, x) for k, m in layers.items()}
            steps['BCN estimate, two stages'] = two_stages(
                make(layers['BCN estimate'], x))
            t = time_side_by_side(steps, rounds, min_seconds)
            rows.append((f'{n}x{c}x{h}x{w}', mode, t))
    return rows


# (batch, channels, height, width): rows of 49 to 12544 elements (height x
# width), inputs of 2^16.6 to 2^20.6 elements.
RULE_SHAPES = [(8, 256, 7, 7), (32, 256, 7, 7), (48, 256, 7, 7),
               (32, 1024, 7, 7), (2, 256, 14, 14), (8, 256, 14, 14),
               (12, 256, 14, 14), (8, 1024, 14, 14), (2, 256, 28, 28),
               (3, 256, 28, 28), (8, 256, 28, 28), (2, 64, 56, 56),
               (2, 96, 56, 56), (2, 256, 56, 56), (1, 64, 112, 112)]
RULE_TITLE = "BCN's fused form vs its two stages, by row length and size"


def rule_tables(rounds, min_seconds):
    """Where BCN should run fused: the fused form against the two stages at
    RULE_SHAPES, in both modes, training and eval."""
    rows = []
    for n, c, h, w in RULE_SHAPES:
        x = torch.randn(n, c, h, w, requires_grad=True)
        for mode in BatchChannelNorm.MODES:
            layer = BatchChannelNorm(c, 32, mode=mode)
            for phase in ('train', 'eval'):
                layer.train(phase == 'train')
                step = (train_step if phase == 'train' else eval_step)(
                    layer, x)
                steps = {'two stages': two_stages(step),
                         'fused': fused(step)}
                t = time_side_by_side(steps, rounds, min_seconds)
                rows.append((f'{n}x{c}x{h}x{w}: row {h * w}, '
                             f'2^{math.log2(x.numel()):.1f}',
                             f'{mode}, {phase}', t))
    return {RULE_TITLE: rows}


# Whole models: the GN+WS config, and GN / BN derived from it by the switch.
MODELS = {
    'Mask R-CNN R-50-FPN':
    'configs/mask_rcnn/mask-rcnn_r50_fpn_gn-ws-all_8xb2-2x_coco.py',
    'DeepLabV3 R-50-D8':
    'configs/deeplabv3/deeplabv3_r50b-d8_gn-ws-all_8xb2-20k_voc12aug-512x512.py',
}
NORMS = {
    'GN': (None, dict(type='GN', num_groups=32, requires_grad=True)),
    'GN+WS': (dict(type='ConvWS'), dict(type='GN', num_groups=32,
                                         requires_grad=True)),
    'BN': (None, dict(type='BN', requires_grad=True)),
    # as the BCN+WS configs: estimate mode, WS variant B
    'BCN+WS': (dict(type='ConvWS', variant='B'),
               dict(type='BCN', num_groups=32, mode='estimate')),
}
# Ratios beside those to the first column: (candidate, base).
MODEL_PAIRS = [('BCN+WS', 'GN+WS')]


def build_model(name, norm, size, device='cpu'):
    """The model of MODELS[name] with NORMS[norm] on ``device``, and a batch
    of 2 images there (the paper's micro-batch; BN needs more than 1 in
    ASPP's pooling)."""
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.registry import MODELS as REGISTRY
    from mmengine.registry import init_default_scope

    from ws_mm.toolbox.switch import switch_layers
    cfg = Config.fromfile(ROOT / MODELS[name])
    init_default_scope(cfg.default_scope)
    conv_cfg, norm_cfg = NORMS[norm]
    model_cfg = switch_layers(cfg.model, conv_cfg, norm_cfg)
    model_cfg.backbone.init_cfg = None
    model_cfg.pop('pretrained', None)
    torch.manual_seed(0)
    model = REGISTRY.build(model_cfg)
    MMLogger.get_current_instance().setLevel('WARNING')  # init_weights' report
    model.init_weights()
    model.to(device)  # and its data preprocessor, which moves the batch
    if cfg.default_scope == 'mmdet':
        from mmdet.testing import demo_mm_inputs
        batch = demo_mm_inputs(2, (3, size, size), num_items=[4, 4],
                               num_classes=80, with_mask=True)
    else:
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        samples = []
        for _ in range(2):
            sample = SegDataSample(metainfo=dict(img_shape=(size, size),
                                                 ori_shape=(size, size),
                                                 pad_shape=(size, size)))
            sample.gt_sem_seg = PixelData(
                data=torch.randint(0, 21, (1, size, size)))
            samples.append(sample)
        batch = dict(inputs=[torch.randint(0, 255, (3, size, size),
                                           dtype=torch.uint8)] * 2,
                     data_samples=samples)
    return model, model.data_preprocessor(batch, True)


def model_step(model, data, mode):
    if mode == 'train':
        def run():
            loss, _ = model.parse_losses(model(**data, mode='loss'))
            loss.backward()
            model.zero_grad(set_to_none=True)
    else:
        def run():
            with torch.no_grad():
                model(**data, mode='predict')
    return run


def peak_memory_mb(name, norm, size):
    """Peak memory of a training iteration, measured in a fresh process.

    glibc's malloc keeps freed blocks of up to 32 MB in its heap and decides
    that threshold dynamically, so the resident peak would wander by ~10%
    from run to run; a fixed mmap threshold returns every tensor of 64 KB or
    more to the OS when it is freed, and the peak follows the live tensors
    (repeat runs agree within 1 MB).
    """
    env = {k: v for k, v in os.environ.items() if k not in KEPT_HEAP}
    env['MALLOC_MMAP_THRESHOLD_'] = '65536'
    out = subprocess.run(
        [sys.executable, __file__, '--memory-of', name, norm, str(size)],
        capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])['peak_mb']


def _status_kb(field):
    with open('/proc/self/status') as f:
        line = next(line for line in f if line.startswith(field + ':'))
    return int(line.split()[1])


def measure_memory(name, norm, size):
    """Growth of the resident memory's high-water mark over the built model
    during two training iterations (Linux: the mark is reset first)."""
    model, data = build_model(name, norm, int(size))
    model.train()
    step = model_step(model, data, 'train')
    step()  # warm-up: lazily allocated state, allocator pools
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset VmHWM to the current VmRSS
    before = _status_kb('VmRSS')
    for _ in range(2):
        step()
    print(json.dumps(dict(peak_mb=(_status_kb('VmHWM') - before) / 1024)))


SHARE_TITLE = "Whole models, WS's own work in a GN+WS training iteration"


def ws_share(model, data):
    """Fraction of a GN+WS training step spent in WS's own work.

    torch.profiler times one step; WS's work is the time inside ws_mm's conv
    Function, forward and backward, less the convolutions it calls. Measured
    within one step, it does not suffer the drift between rounds that limits
    the time ratios; the profiler's per-op overhead counts against WS's many
    small ops, so it is an upper estimate.
    """
    from torch.profiler import profile
    step = model_step(model, data, 'train')
    step()
    with profile() as prof:
        start = time.perf_counter()
        step()
        total = time.perf_counter() - start
    convs = ('aten::convolution', 'aten::convolution_backward')
    ws_us = sum(
        event.cpu_time_total - sum(child.cpu_time_total
                                   for child in event.cpu_children
                                   if child.name in convs)
        for event in prof.events()
        if event.name in ('_WSConvolution', '_WSConvolutionBackward'))
    return ws_us * 1e-6 / total


def model_tables(rounds, min_seconds, size, names):
    """Training time, training peak memory, WS's share of a training step,
    inference time."""
    train_rows, memory_rows, shares, eval_rows = [], [], [], []
    for name in names:
        label = f'{name} {size}x{size}, 2 images'
        built = {norm: build_model(name, norm, size) for norm in NORMS}
        for model, _ in built.values():
            model.train()
        train_rows.append((label, 'train', time_side_by_side(
            {norm: model_step(model, data, 'train')
             for norm, (model, data) in built.items()}, rounds,
            min_seconds)))
        memory_rows.append((label, 'train peak memory', {
            norm: peak_memory_mb(name, norm, size) for norm in NORMS}))
        shares.append((label, ws_share(*built['GN+WS'])))

        ws_model, data = built['GN+WS']
        folded = fold_weight_standardization(copy.deepcopy(ws_model))
        for model in (built['GN'][0], ws_model, folded):
            model.eval()
        eval_rows.append((label, 'inference', time_side_by_side(
            {'GN': model_step(built['GN'][0], data, 'eval'),
             'GN+WS cached': model_step(ws_model, data, 'eval'),
             'GN+WS folded': model_step(folded, data, 'eval')},
            rounds, min_seconds)))
    return {
        'Whole models, training iteration': train_rows,
        'Whole models, peak memory of a training iteration': memory_rows,
        SHARE_TITLE: shares,
        'Whole models, inference': eval_rows,
    }


def share_markdown(title, rows):
    """Rows of (shape, fraction) as percentages."""
    return '\n'.join([f'### {title}', '',
                      '| shape | share of the step (torch.profiler) |',
                      '|---|---|'] +
                     [f'| {shape} | {share:.2%} |' for shape, share in rows]
                     ) + '\n'


def size_text(nbytes):
    return (f'{nbytes / 2**20:.2f} MB' if nbytes >= 2**20 else
            f'{nbytes / 2**10:.1f} KB')


def saved_markdown(title, rows):
    """Rows of (shape, {candidate: bytes}, weight bytes) of
    :func:`saved_bytes`, with what they measure."""
    names = list(rows[0][1])
    return '\n'.join([
        f'### {title}', '',
        'Training: what autograd keeps from the forward for the backward '
        '(saved_tensors_hooks: the distinct storages saved, less the '
        "input's and the parameters', which all keep; exact). Buffers "
        "outliving the step are not in it: ws_mm's W_hat buffer (one per "
        'thread, the size of the largest weight, shared by all its layers) '
        "and W traffic only's copy of W.", '',
        '| shape | ' + ' | '.join(names) + ' | W |',
        '|---|' + '---|' * (len(names) + 1)] + [
        f'| {shape} | ' + ' | '.join(size_text(kept[n]) for n in names) +
        f' | {size_text(weight)} |' for shape, kept, weight in rows]) + '\n'


def round_ratios(values, base):
    """``values / base`` as the median of the per-round ratios, and their
    minimum and maximum: pairing each round with the baseline's cancels
    drift between rounds, and the range shows what is left of the noise."""
    ratios = [v / b for v, b in zip(values, base)]
    return statistics.median(ratios), min(ratios), max(ratios)


def ratio_cell(values, base):
    """:func:`round_ratios` as a table cell."""
    if not isinstance(values, list):  # a single measurement (memory)
        return f'{values / base:.3f}x'
    return '{:.3f}x ({:.3f}-{:.3f})'.format(*round_ratios(values, base))


def markdown(title, rows, pairs=()):
    """Rows of (shape, mode, {candidate: values}) as ratios to the first
    candidate, then those of ``pairs`` (candidate, base); values are seconds
    per round, except in 'memory' rows (MB)."""
    names = list(rows[0][2])
    base = names[0]
    pairs = [(n, base) for n in names[1:]] + [
        pair for pair in pairs if set(pair) <= set(names)]
    lines = [
        f'### {title}', '',
        '| shape | mode | ' + ' | '.join(f'{n} / {b}' for n, b in pairs) +
        f' | {base} |',
        '|---|---|' + '---|' * (len(pairs) + 1),
    ]
    for shape, mode, values in rows:
        ratios = ' | '.join(ratio_cell(values[n], values[b])
                            for n, b in pairs)
        absolute = (f'{values[base]:.0f} MB' if 'memory' in mode else
                    f'{statistics.median(values[base]) * 1e3:.2f} ms')
        lines.append(f'| {shape} | {mode} | {ratios} | {absolute} |')
    return '\n'.join(lines) + '\n'


# glibc malloc settings for the timings: freed blocks of up to 32 MB stay in
# the heap and the heap is not trimmed, as in a training loop's steady state.
# With the defaults the thresholds grow as the run goes, so the first shapes
# pay page faults for every new tensor that later ones do not.
KEPT_HEAP = {'MALLOC_MMAP_THRESHOLD_': str(32 << 20),
             'MALLOC_TRIM_THRESHOLD_': str(1 << 40)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=7,
                        help='interleaved rounds; the median ratio and the '
                        'range are reported')
    parser.add_argument('--min-seconds', type=float, default=0.2,
                        help='time per candidate per round')
    parser.add_argument('--only', nargs='+',
                        choices=['conv', 'kernel', 'norm', 'rule', 'model'],
                        default=['conv', 'kernel', 'norm', 'model'])
    parser.add_argument('--models', nargs='+', choices=list(MODELS),
                        default=list(MODELS), help='models of the model table')
    parser.add_argument('--size', type=int, default=320,
                        help='image size of the model table')
    parser.add_argument('--out', help='also write the tables to this file')
    parser.add_argument('--memory-of', nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_of:
        measure_memory(*args.memory_of)
        return
    if any(os.environ.get(k) != v for k, v in KEPT_HEAP.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  dict(os.environ, **KEPT_HEAP))

    header = (f'torch {torch.__version__}, {args.threads} threads, '
              f'{args.rounds} interleaved rounds; ratio to the first column '
              '(lower is faster): median of the per-round ratios (min-max); '
              'train = forward + backward, eval = forward under no_grad\n')
    print(header)
    out = [header]
    tables = {
        'conv': lambda: conv_tables(args.rounds, args.min_seconds),
        'kernel': lambda: {"WS's own work in a training step, timm vs ws_mm":
                           kernel_tables(args.rounds, args.min_seconds)},
        'norm': lambda: {'BCN vs GN and BN':
                         norm_tables(args.rounds, args.min_seconds)},
        'rule': lambda: rule_tables(args.rounds, args.min_seconds),
        'model': lambda: model_tables(args.rounds, args.min_seconds,
                                      args.size, args.models),
    }
    for key in args.only:
        for title, rows in tables[key]().items():
            special = {SHARE_TITLE: share_markdown,
                       SAVED_TITLE: saved_markdown}.get(title)
            out.append(special(title, rows) if special else
                       markdown(title, rows, MODEL_PAIRS + CONV_PAIRS))
            print(out[-1], flush=True)
    if args.out:
        with open(args.out, 'w') as f:
            f.write('\n'.join(out))


if __name__ == '__main__':
    main()
