"""The micro-batch study: BN vs GN vs GN+WS vs BCN+WS at 1-2 images per process.

    python tools/benchmark_microbatch.py [--seeds 0 1] [--images 480]

Trains the demo DeepLabV3 (configs/demo, ResNet-18, on the data of
tools/make_demo_data.py) once per normalization, batch size and seed, with
tools/train.py in one process, and evaluates mIoU on the validation split:

    BN at 8 images, BN at 1, GN at 1, GN+WS at 1, BCN+WS at 1 and at 2.

Every run sees the same number of images (``--images``; iterations = images /
batch) with the demo's poly schedule over its iterations and the learning
rate scaled linearly with the batch (the demo's 0.01 at 2 images). The
variants are the demo config switched by ws_mm.toolbox.switch; nothing else
differs. Writes docs/microbatch.md (mean and spread over seeds) and
docs/microbatch.png, and keeps each run under --work-dir: a run that
finished there before is reused, so seeds can be added later.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mmengine.config import Config

from ws_mm.toolbox.demo_data import DEMO_CONFIGS, data_root_options
from ws_mm.toolbox.switch import switch_layers

ROOT = Path(__file__).resolve().parents[1]
CONFIG = DEMO_CONFIGS['mmseg']
BASE_LR, BASE_BATCH = 0.01, 2
GN = dict(type='GN', num_groups=32, requires_grad=True)
# name: (conv_cfg, norm_cfg, images per process)
RUNS = {
    'BN, 8 img': (None, dict(type='BN', requires_grad=True), 8),
    'BN, 1 img': (None, dict(type='BN', requires_grad=True), 1),
    'GN, 1 img': (None, GN, 1),
    'GN+WS, 1 img': (dict(type='ConvWS'), GN, 1),
    'BCN+WS, 1 img': (dict(type='ConvWS', variant='B'),
                      dict(type='BCN', num_groups=32, mode='estimate'), 1),
    'BCN+WS, 2 img': (dict(type='ConvWS', variant='B'),
                      dict(type='BCN', num_groups=32, mode='estimate'), 2),
}


def run_config(name, layers, seed, images, data, work_dir: Path) -> Path:
    """Write the config of one run, ``layers`` = (conv_cfg, norm_cfg,
    images per process), and return its path."""
    conv_cfg, norm_cfg, batch = layers
    cfg = Config.fromfile(ROOT / CONFIG)
    cfg.model = switch_layers(cfg.model, conv_cfg, norm_cfg)
    cfg.merge_from_dict(data_root_options('mmseg', data))
    iters = images // batch
    cfg.train_dataloader.batch_size = batch
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = iters
    cfg.param_scheduler[0].end = iters
    cfg.optim_wrapper.optimizer.lr = BASE_LR * batch / BASE_BATCH
    cfg.default_hooks.checkpoint.interval = iters
    cfg.default_hooks.logger.interval = 50
    cfg.randomness = dict(seed=seed)
    path = work_dir / f'{name.replace(", ", "_").replace(" ", "")}_s{seed}.py'
    cfg.dump(str(path))
    return path


def final_miou(run_dir: Path):
    """The validation mIoU a finished run logged, or None."""
    for scalars in sorted(run_dir.glob('*/vis_data/scalars.json'),
                          reverse=True):
        for line in reversed(scalars.read_text().splitlines()):
            record = json.loads(line)
            if 'mIoU' in record:
                return record['mIoU']
    return None


def plot(results, out: Path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = list(results)
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, name in enumerate(names):
        values = results[name]
        ax.scatter([i] * len(values), values, color='gray', s=12, zorder=2)
        ax.bar(i, statistics.mean(values), color='C0' if 'BN,' in name
               else 'C1' if name.startswith('GN,') else 'C2', zorder=1)
    ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    ax.set_ylabel('val mIoU (%)')
    ax.set_title('DeepLabV3 R-18 on the demo VOC data: the same images seen '
                 'per run', fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    parser.add_argument('--images', type=int, default=480,
                        help='training images seen by every run')
    parser.add_argument('--runs', nargs='+', choices=list(RUNS),
                        default=list(RUNS))
    parser.add_argument(
        '--bcn-momentum', type=float, nargs='+', default=[],
        help="also run BCN+WS at 1 image with these moving-average rates of "
        "its estimates (the default run uses BCN's default, 0.1)")
    parser.add_argument('--data', default='data/demo')
    parser.add_argument('--work-dir', default='work_dirs/microbatch')
    parser.add_argument('--out', default='docs/microbatch')
    args = parser.parse_args(argv)
    command = (f'python tools/benchmark_microbatch.py --seeds '
               f'{" ".join(map(str, args.seeds))} --images {args.images}')
    if args.runs != list(RUNS):
        command += ' --runs ' + ' '.join(repr(r) for r in args.runs)
    if args.bcn_momentum:
        command += ' --bcn-momentum ' + ' '.join(
            f'{m:g}' for m in args.bcn_momentum)
    runs = {name: RUNS[name] for name in args.runs}
    for momentum in args.bcn_momentum:
        conv_cfg, norm_cfg, _ = RUNS['BCN+WS, 1 img']
        runs[f'BCN+WS m{momentum:g}, 1 img'] = (
            conv_cfg, dict(norm_cfg, momentum=momentum), 1)
    work_dir = Path(args.work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    data = str(Path(args.data).resolve())
    subprocess.run([sys.executable, 'tools/make_demo_data.py', '--out', data],
                   cwd=ROOT, check=True)

    results, failures, start = {}, {}, time.time()
    for name, layers in runs.items():
        for seed in args.seeds:
            config = run_config(name, layers, seed, args.images, data,
                                work_dir)
            run_dir = work_dir / config.stem
            if final_miou(run_dir) is None:  # else: finished earlier, reused
                print(f'[microbatch] {name}, seed {seed}: {config.name} '
                      f'({time.time() - start:.0f} s so far)', flush=True)
                proc = subprocess.run(
                    [sys.executable, 'tools/train.py', str(config),
                     '--work-dir', str(run_dir)], cwd=ROOT,
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                    text=True)
                if proc.returncode:  # a normalization that cannot train
                    failures[name] = proc.stderr.strip().splitlines()[-1]
                    print(f'[microbatch]   failed: {failures[name]}')
                    continue
            results.setdefault(name, []).append(final_miou(run_dir))
            print(f'[microbatch]   mIoU {results[name][-1]:.2f}', flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f'Command: `{command}`', '',
        '| normalization, images per process | val mIoU (%), mean | '
        'spread (min-max) | seeds |', '|---|---|---|---|'
    ]
    for name in runs:
        values = results.get(name)
        if values:
            lines.append(f'| {name} | {statistics.mean(values):.2f} | '
                         f'{min(values):.2f}-{max(values):.2f} | '
                         f'{len(values)} |')
        else:
            lines.append(f'| {name} | cannot train: `{failures[name]}` | | |')
    out.with_suffix('.md').write_text('\n'.join(lines) + '\n')
    plot(results, out.with_suffix('.png'))  # the runs that trained
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
