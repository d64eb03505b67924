"""The micro-batch study: BN, GN, GN+WS and BCN+WS at 1-2 images per process.

    python tools/benchmark_microbatch.py [--seeds 0 [1 ...]] [--rows ...]

Trains the demo DeepLabV3 (configs/demo: ResNet-18, no pretrained weights) on
the data of tools/make_demo_data.py and evaluates mIoU on its validation
split. The variants are the demo config switched by ws_mm.toolbox.switch;
every run has the demo's poly schedule over its iterations, with the learning
rate scaled linearly with the images per step (the demo's 0.01 at 2).

Two-phase runs, the paper's protocol in miniature (BCN normalizes with batch
statistics where batches are large, and with its estimates in micro-batch
training that starts from such a model):

* phase 1: ``--images`` images at 8 per step in one process: BN, GN+WS, and
  BCN+WS with ``mode='batch'``;
* phase 2: from each phase-1 checkpoint, ``--images`` more at 1 image per
  process on 2 processes (tools/dist_train.sh): BN, GN+WS, and BCN+WS with
  ``mode='estimate'``, whose estimates start from phase 1's statistics and
  are averaged over the processes. Diagnostics: BN and BCN+WS with their
  statistics frozen after phase 1 (FreezeNormStatisticsHook), and BCN+WS's
  phase-2 model tested after recalibrating its estimates
  (NormRecalibrationHook over ``--recalibration-batches`` training images).

From-scratch runs, one phase in one process, ``--images`` images: BN at 8
and at 1 image, GN, GN+WS and BCN+WS (estimate mode) at 1 image, BCN+WS at 2,
and BCN+WS at 1 recalibrated before testing.

Writes docs/microbatch.md (mean and spread over seeds) and docs/microbatch.png,
and keeps each run under --work-dir: a run that finished there before is
reused, so seeds can be added later.
"""
import argparse
import re
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from devkit import (DEMO_CONFIGS, ROOT, demo_data_options, first_error,
                    logged_test_metrics, read_scalars, run)
from mmengine.config import Config

from ws_mm.toolbox.switch import switch_layers

CONFIG = DEMO_CONFIGS['mmseg']
BASE_LR, BASE_BATCH = 0.01, 2

BN = dict(type='BN', requires_grad=True)
GN = dict(type='GN', num_groups=32, requires_grad=True)
WS = dict(type='ConvWS')
WS_B = dict(type='ConvWS', variant='B')  # BCN's WS, as the authors' code
BCN_BATCH = dict(type='BCN', num_groups=32, mode='batch')
BCN_ESTIMATE = dict(type='BCN', num_groups=32, mode='estimate')
FREEZE = dict(type='FreezeNormStatisticsHook')


@dataclass
class Run:
    """One training run: its layers, ``batch`` images per process on
    ``procs`` processes, the run whose last checkpoint it starts from
    (``start``, a key of PHASE1) and its ``custom_hooks``."""
    conv_cfg: Optional[dict]
    norm_cfg: dict
    batch: int
    procs: int = 1
    start: Optional[str] = None
    hooks: List[dict] = field(default_factory=list)


PHASE1 = {
    'BN': Run(None, BN, 8),
    'GN+WS': Run(WS, GN, 8),
    'BCN+WS': Run(WS_B, BCN_BATCH, 8),
}
# Rows: phase 1 -> phase 2.
PHASE2 = {
    'BN -> BN': Run(None, BN, 1, 2, 'BN'),
    'BN -> BN, statistics frozen': Run(None, BN, 1, 2, 'BN', [FREEZE]),
    'GN+WS -> GN+WS': Run(WS, GN, 1, 2, 'GN+WS'),
    'BCN+WS batch -> estimate': Run(WS_B, BCN_ESTIMATE, 1, 2, 'BCN+WS'),
    'BCN+WS batch -> estimate, estimates frozen': Run(
        WS_B, BCN_ESTIMATE, 1, 2, 'BCN+WS', [FREEZE]),
}
SCRATCH = {
    'BN, 8 img': PHASE1['BN'],  # the same run, trained once
    'BN, 1 img': Run(None, BN, 1),
    'GN, 1 img': Run(None, GN, 1),
    'GN+WS, 1 img': Run(WS, GN, 1),
    'BCN+WS, 1 img': Run(WS_B, BCN_ESTIMATE, 1),
    'BCN+WS, 2 img': Run(WS_B, BCN_ESTIMATE, 2),
}
# Rows that test another row's model after recalibrating its statistics.
RECALIBRATED = {
    'BCN+WS batch -> estimate, recalibrated': 'BCN+WS batch -> estimate',
    'BCN+WS, 1 img, recalibrated': 'BCN+WS, 1 img',
}
TWO_PHASE_ROWS = [*PHASE2, 'BCN+WS batch -> estimate, recalibrated']
SCRATCH_ROWS = [*SCRATCH, 'BCN+WS, 1 img, recalibrated']


def phase1_of(row: str) -> str:
    """The phase-1 run a two-phase row continues."""
    return PHASE2[RECALIBRATED.get(row, row)].start


class RunFailed(Exception):
    """A run that exited non-zero; the message is its first error line."""


def slug(name: str) -> str:
    return re.sub(r'[^A-Za-z0-9+.]+', '_', name).strip('_')


def write_config(run: Run, path: Path, seed: int, images: int,
                 data: str, load_from: Optional[Path]) -> None:
    cfg = Config.fromfile(ROOT / CONFIG)
    cfg.model = switch_layers(cfg.model, run.conv_cfg, run.norm_cfg)
    cfg.merge_from_dict(demo_data_options('mmseg', data))
    step = run.batch * run.procs
    iters = images // step
    cfg.train_dataloader.batch_size = run.batch
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = iters
    cfg.param_scheduler[0].end = iters
    cfg.optim_wrapper.optimizer.lr = BASE_LR * step / BASE_BATCH
    cfg.default_hooks.checkpoint.interval = iters
    cfg.default_hooks.logger.interval = 50
    cfg.custom_hooks = run.hooks
    cfg.randomness = dict(seed=seed)
    if load_from is not None:
        cfg.load_from = str(load_from)
    cfg.dump(str(path))


def final_miou(run_dir: Path) -> Optional[float]:
    """The validation mIoU a finished training run logged, or None."""
    return next((record['mIoU'] for record in reversed(read_scalars(run_dir))
                 if 'mIoU' in record), None)


def last_checkpoint(run_dir: Path) -> Path:
    return Path((run_dir / 'last_checkpoint').read_text().strip())


def launch(args: List[str], log: Path) -> None:
    """Run a tool, its output in ``log`` (devkit.run: from the repo root,
    each launch on a free port of its own)."""
    if run(args, log=log).returncode:
        raise RunFailed(first_error(log.read_text()))


class Study:
    """The runs of one invocation: in ``work_dir``, on the data in ``data``,
    ``images`` training images per run (per phase)."""

    def __init__(self, work_dir: Path, data: str, images: int,
                 recalibration_batches: int):
        self.work_dir, self.data, self.images = work_dir, data, images
        self.runs = {**PHASE1, **PHASE2, **SCRATCH}
        self.recalibration_batches = recalibration_batches
        self.start = time.time()

    def say(self, message: str) -> None:
        print(f'[microbatch {time.time() - self.start:5.0f} s] {message}',
              flush=True)

    def run_dir(self, name: str, seed: int) -> Path:
        # a run listed twice is trained once, under its first name
        name = next(n for n, run in self.runs.items()
                    if run is self.runs[name])
        part = ('phase1' if name in PHASE1 else
                'phase2' if name in PHASE2 else 'scratch')
        return self.work_dir / f'{part}_{slug(name)}_s{seed}'

    def train(self, name: str, seed: int) -> float:
        """The mIoU of run ``name`` (of PHASE1, PHASE2 or SCRATCH),
        trained unless a finished one is in its folder. Raises RunFailed."""
        run_dir = self.run_dir(name, seed)
        if final_miou(run_dir) is None:
            run = self.runs[name]
            load_from = None
            if run.start is not None:
                self.train(run.start, seed)
                load_from = last_checkpoint(self.run_dir(run.start, seed))
            run_dir.mkdir(parents=True, exist_ok=True)
            config = run_dir.with_suffix('.py')
            write_config(run, config, seed, self.images, self.data,
                         load_from)
            self.say(f'train {run_dir.name}')
            launch(([sys.executable, 'tools/train.py', str(config)]
                    if run.procs == 1 else
                    ['bash', 'tools/dist_train.sh', str(config),
                     str(run.procs)]) + ['--work-dir', str(run_dir)],
                   run_dir / 'run.log')
        return final_miou(run_dir)

    def recalibrated(self, name: str, seed: int) -> float:
        """The mIoU of run ``name``'s last checkpoint tested after
        recalibrating its statistics over training batches of its config."""
        self.train(name, seed)
        run_dir = self.run_dir(name, seed)
        test_dir = run_dir.with_name(run_dir.name + '_recalibrated')
        if not list(test_dir.glob('*/*.log')):
            config = Config.fromfile(run_dir.with_suffix('.py'))
            config.custom_hooks = [dict(
                type='NormRecalibrationHook',
                num_batches=self.recalibration_batches,
                when='before_test')]
            test_dir.mkdir(parents=True, exist_ok=True)
            config.dump(str(test_dir.with_suffix('.py')))
            self.say(f'test {run_dir.name}, recalibrated')
            launch([sys.executable, 'tools/test.py',
                    str(test_dir.with_suffix('.py')),
                    str(last_checkpoint(run_dir)), '--work-dir',
                    str(test_dir)], test_dir / 'run.log')
        log = sorted(test_dir.glob('*/*.log'))[-1]
        return logged_test_metrics(log)['mIoU']

    def miou(self, row: str, seed: int) -> float:
        if row in RECALIBRATED:
            return self.recalibrated(RECALIBRATED[row], seed)
        return self.train(row, seed)


def cells(values: Optional[List[float]], failure: str) -> List[str]:
    """Mean and spread (min-max), or why the run could not train."""
    if not values:
        return [f'cannot train: `{failure}`', '']
    return [f'{statistics.mean(values):.2f}',
            f'{min(values):.2f}-{max(values):.2f}']


def plot(panels, out: Path) -> None:
    """One panel per table: a bar per row and column (the mean), a dot per
    seed. ``panels``: (title, {row: [values per column]}, column names)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5),
                             squeeze=False)
    for ax, (title, rows, columns) in zip(axes[0], panels):
        width = 0.8 / len(columns)
        labelled = set()
        for i, row in enumerate(rows):
            for j, values in enumerate(rows[row]):
                x = i + (j - (len(columns) - 1) / 2) * width
                if values:
                    ax.bar(x, statistics.mean(values), width, color=f'C{j}',
                           label=None if j in labelled else columns[j],
                           zorder=1)
                    labelled.add(j)
                    ax.scatter([x] * len(values), values, color='k', s=8,
                               zorder=2)
                else:
                    ax.text(x, 1, 'cannot\ntrain', ha='center', fontsize=6)
        ax.set_xticks(range(len(rows)), [r.replace(' -> ', '\n-> ')
                                         for r in rows],
                      rotation=30, ha='right', fontsize=7)
        ax.set_ylabel('val mIoU (%)')
        ax.set_title(title, fontsize=9)
        if len(columns) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0])
    parser.add_argument('--images', type=int, default=480,
                        help='training images per run, per phase')
    parser.add_argument('--rows', nargs='+',
                        choices=TWO_PHASE_ROWS + SCRATCH_ROWS,
                        default=TWO_PHASE_ROWS + SCRATCH_ROWS)
    parser.add_argument('--recalibration-batches', type=int, default=100)
    parser.add_argument('--data', default='data/demo')
    parser.add_argument('--num-train', type=int, default=240)
    parser.add_argument('--num-val', type=int, default=60)
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--work-dir', default='work_dirs/microbatch')
    parser.add_argument('--out', default='docs/microbatch')
    args = parser.parse_args(argv)
    command = 'python tools/benchmark_microbatch.py ' + shlex.join(
        sys.argv[1:] if argv is None else argv)
    rows = args.rows
    data = str(Path(args.data).resolve())
    run([sys.executable, 'tools/make_demo_data.py', '--out', data,
         '--num-train', str(args.num_train), '--num-val', str(args.num_val),
         '--size', str(args.size)], stream=True).check_returncode()
    study = Study(Path(args.work_dir).resolve(), data, args.images,
                  args.recalibration_batches)

    results, failures = {}, {}
    for seed in args.seeds:
        for row in rows:
            try:
                results.setdefault(row, []).append(study.miou(row, seed))
                study.say(f'{row}, seed {seed}: mIoU {results[row][-1]:.2f}')
            except RunFailed as error:
                failures.setdefault(row, str(error))
                study.say(f'{row}, seed {seed}: failed: {error}')
    phase1 = {name: [final_miou(study.run_dir(name, seed))
                     for seed in args.seeds] for name in PHASE1}
    phase1 = {name: [v for v in values if v is not None]
              for name, values in phase1.items()}

    two_phase = [r for r in rows if r in TWO_PHASE_ROWS]
    from_scratch = [r for r in rows if r not in TWO_PHASE_ROWS]
    lines = [f'Command: `{command}`', '']
    panels = []
    if two_phase:
        lines += [
            f'Two phases, {args.images} training images each: phase 1 at 8 '
            'images per step in 1 process, phase 2 from its checkpoint at 1 '
            'image per process on 2 processes.', '',
            '| phase 1 -> phase 2 | after phase 1 (mean) | spread | '
            'after phase 2 (mean) | spread | seeds |',
            '|---|---|---|---|---|---|']
        for row in two_phase:
            lines.append('| ' + ' | '.join([
                row, *cells(phase1[phase1_of(row)], ''),
                *cells(results.get(row), failures.get(row)),
                str(len(results.get(row, [])))]) + ' |')
        panels.append(('two phases: 8 images, then 1 per process on 2',
                       {row: [phase1[phase1_of(row)], results.get(row)]
                        for row in two_phase},
                       ['after phase 1', 'after phase 2']))
        lines.append('')
    if from_scratch:
        lines += [
            f'From scratch, one phase of {args.images} training images in '
            '1 process.', '',
            '| normalization, images per process | val mIoU (%), mean | '
            'spread (min-max) | seeds |', '|---|---|---|---|']
        for row in from_scratch:
            lines.append('| ' + ' | '.join([
                row, *cells(results.get(row), failures.get(row)),
                str(len(results.get(row, [])))]) + ' |')
        panels.append(('from scratch, 1 process',
                       {row: [results.get(row)] for row in from_scratch},
                       ['val mIoU']))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix('.md').write_text('\n'.join(lines).rstrip() + '\n')
    plot(panels, out.with_suffix('.png'))
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
