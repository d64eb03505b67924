"""Speed of ws_mm's layers against their plain and mmcv counterparts.

Every candidate is timed side by side in one run, interleaved round by round,
and reported as a ratio to the baseline of its table (median over rounds), so
machine noise and drift cancel out as far as they can. Absolute times are
printed for reference only.

    python tools/benchmark_speed.py                 # all tables, 2 threads
    python tools/benchmark_speed.py --rounds 5 --threads 2 --out docs/speed.md

Conv shapes are those of Mask R-CNN R-50-FPN on one 800x1333 image.
"""
import argparse
import statistics
import time

import torch
from mmcv.cnn.bricks.conv_ws import ConvWS2d as MMCVConvWS2d
from torch import nn

from ws_mm.layers import BatchChannelNorm, ConvWS2d

# (in, out, kernel, height, width)
CONV_SHAPES = [
    (256, 256, 3, 50, 84),
    (512, 512, 3, 25, 42),
    (1024, 256, 1, 50, 84),
    (2048, 512, 1, 25, 42),
    (256, 256, 3, 14, 14),
]
# (batch, channels, height, width)
NORM_SHAPES = [(2, 256, 50, 84), (2, 1024, 25, 42), (1, 256, 14, 14)]


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
    """Median seconds per call of each step, measured interleaved."""
    calls = {}
    for name, step in steps.items():  # warm-up, and calls per round
        step()
        start = time.perf_counter()
        step()
        calls[name] = max(1, int(min_seconds / (time.perf_counter() - start)))
    samples = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                step()
            samples[name].append((time.perf_counter() - start) / calls[name])
    return {name: statistics.median(s) for name, s in samples.items()}


def conv_tables(rounds, min_seconds):
    rows = []
    for cin, cout, k, h, w in CONV_SHAPES:
        torch.manual_seed(0)
        plain = nn.Conv2d(cin, cout, k, padding=k // 2)
        mmcv_ws = MMCVConvWS2d(cin, cout, k, padding=k // 2)
        ours = ConvWS2d(cin, cout, k, padding=k // 2)
        for layer in (mmcv_ws, ours):
            layer.load_state_dict(plain.state_dict())
        x = torch.randn(1, cin, h, w, requires_grad=True)
        layers = {'conv': plain, 'mmcv ConvWS2d': mmcv_ws, 'ws_mm ConvWS2d': ours}
        for mode, make in (('train', train_step), ('eval', eval_step)):
            for layer in layers.values():
                layer.train(mode == 'train')
            t = time_side_by_side({n: make(m, x) for n, m in layers.items()},
                                  rounds, min_seconds)
            rows.append((f'{cin}->{cout} {k}x{k} on {h}x{w}', mode, t))
    return rows


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
            t = time_side_by_side({k: make(m, x) for k, m in layers.items()},
                                  rounds, min_seconds)
            rows.append((f'{n}x{c}x{h}x{w}', mode, t))
    return rows


def markdown(title, rows):
    names = list(rows[0][2])
    base = names[0]
    lines = [
        f'### {title}', '',
        '| shape | mode | ' + ' | '.join(f'{n} / {base}' for n in names[1:]) +
        f' | {base} ms |',
        '|---|---|' + '---|' * len(names),
    ]
    for shape, mode, t in rows:
        ratios = ' | '.join(f'{t[n] / t[base]:.3f}x' for n in names[1:])
        lines.append(f'| {shape} | {mode} | {ratios} | {t[base] * 1e3:.2f} |')
    return '\n'.join(lines) + '\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=7,
                        help='interleaved rounds; the median is reported')
    parser.add_argument('--min-seconds', type=float, default=0.2,
                        help='time per candidate per round')
    parser.add_argument('--only', choices=['conv', 'norm'])
    parser.add_argument('--out', help='also write the tables to this file')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    header = (f'torch {torch.__version__}, {args.threads} threads, '
              f'{args.rounds} interleaved rounds, median; ratios to the first '
              'column (lower is faster); train = forward + backward, '
              'eval = forward under no_grad\n')
    print(header)
    out = [header]
    if args.only in (None, 'conv'):
        out.append(markdown('WS conv vs plain conv',
                            conv_tables(args.rounds, args.min_seconds)))
        print(out[-1])
    if args.only in (None, 'norm'):
        out.append(markdown('BCN vs GN and BN',
                            norm_tables(args.rounds, args.min_seconds)))
        print(out[-1])
    if args.out:
        with open(args.out, 'w') as f:
            f.write('\n'.join(out))


if __name__ == '__main__':
    main()
