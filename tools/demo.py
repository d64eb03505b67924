"""The demo: GN+WS and BCN+WS models trained on 2 processes, on CPU.

    python tools/demo.py            # or: make demo (also sets up .venv)
    python tools/demo.py --tasks cls det-pretrained det
                                    # or: make demo-pretrain (.venv-oldest)
    python tools/demo.py --tasks video

1. writes the demo data (tools/make_demo_data.py) unless it is there;
2. for each task, trains its configs/demo model with tools/dist_train.sh on
   NPROC processes and tests it with tools/dist_test.sh (predictions drawn by
   the toolbox's visualizer, but for video):
   - det: Mask R-CNN from scratch (box and mask mAP);
   - seg: DeepLabV3 from scratch (mIoU);
   - cls: a ResNet-18 classifier from scratch on the object crops (top-1);
   - det-pretrained: Mask R-CNN whose backbone starts from the cls run's;
   - video-gn-ws, video-bcn-ws: a ResNet-18 TSM from scratch on the clips,
     with GN+WS and with BCN+WS (top-1); ``video`` names both;
3. plots the loss and metric curves of the runs and prints a summary: the
   metrics and where the checkpoints, logs, metric JSON and pictures are.

The toolboxes' own logs stream to the terminal, so progress is visible.
``--iters`` and the data options shorten the run (the tests use them).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import devkit

DET_METRICS = ('coco/bbox_mAP', 'coco/segm_mAP')
TASKS = {
    'det': dict(scope='mmdet', config=devkit.DEMO_CONFIGS['mmdet'],
                metrics=DET_METRICS),
    'seg': dict(scope='mmseg', config=devkit.DEMO_CONFIGS['mmseg'],
                metrics=('mIoU', 'aAcc')),
    'cls': dict(scope='mmpretrain', config=devkit.DEMO_CONFIGS['mmpretrain'],
                metrics=('accuracy/top1', )),
    # its config's backbone checkpoint is the cls run's, set below
    'det-pretrained': dict(scope='mmdet', config=devkit.DEMO_PRETRAINED_DET,
                           metrics=DET_METRICS, backbone_from='cls'),
    # Not drawn: mmaction 1.2.0's test.py --show-dir fails. Its default
    # runtime has no VisualizationHook (open-mmlab/mmaction2#2824), and the
    # hook passes show= to ActionVisualizer.add_datasample, which takes none.
    'video-gn-ws': dict(scope='mmaction', config=devkit.DEMO_CONFIGS[
        'mmaction'], metrics=('acc/top1', ), draw=False),
    'video-bcn-ws': dict(scope='mmaction', config=devkit.DEMO_BCN_TSM,
                         metrics=('acc/top1', ), draw=False),
}
# --tasks names that run several tasks
GROUPS = {'video': ('video-gn-ws', 'video-bcn-ws')}


def say(message):
    print(f'\n[demo] {message}', flush=True)


def run(args):
    """Run a tool with its output streaming to the terminal; each on a free
    port of its own (devkit.run), unless PORT is set."""
    devkit.run(args, stream=True).check_returncode()


def newest_run_dir(work_dir: Path) -> Path:
    """The timestamped folder (YYYYmmdd_HHMMSS) of the latest run."""
    return max(p for p in work_dir.iterdir()
               if p.is_dir() and p.name.replace('_', '').isdigit())


def train_and_test(task, args, work_dir: Path, results):
    spec = TASKS[task]
    config = spec['config']
    options = devkit.demo_data_options(spec['scope'], args.data)
    if 'backbone_from' in spec:
        options['model.backbone.init_cfg.checkpoint'] = results[
            spec['backbone_from']]['checkpoint']
    options = ['--cfg-options', *devkit.cfg_options(options)]
    if args.iters:
        options += [f'train_cfg.max_iters={args.iters}',
                    f'train_cfg.val_interval={args.iters}',
                    f'default_hooks.checkpoint.interval={args.iters}']
    train_dir, test_dir = work_dir / task, work_dir / f'{task}_test'
    say(f'{task}: training {config} on {args.nproc} processes')
    run(['bash', 'tools/dist_train.sh', config, str(args.nproc),
         '--work-dir', str(train_dir), *options])
    checkpoint = Path((train_dir / 'last_checkpoint').read_text().strip())
    say(f'{task}: testing {checkpoint.name} on {args.nproc} processes')
    draw = spec.get('draw', True)
    run(['bash', 'tools/dist_test.sh', config, str(checkpoint),
         str(args.nproc), '--work-dir', str(test_dir),
         *(['--show-dir', str(test_dir / 'vis')] if draw else []), *options])
    test_run = newest_run_dir(test_dir)
    test_log = test_run / f'{test_run.name}.log'
    metrics = devkit.logged_test_metrics(test_log)
    pictures = sorted(p for p in (test_dir / 'vis').rglob('*')
                      if p.suffix in ('.png', '.jpg')) if draw else None
    return dict(checkpoint=checkpoint,
                train_scalars=devkit.read_scalars(train_dir),
                test_log=test_log,
                metrics={k: metrics[k] for k in spec['metrics']},
                pictures=pictures)


def plot_curves(results, out: Path):
    """Training loss of each task, with its test metrics written in."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4),
                             squeeze=False)
    for ax, (task, result) in zip(axes[0], results.items()):
        for key in ('loss', *(k for k in result['train_scalars'][0]
                              if k.startswith(('loss_', 'decode.loss')))):
            points = [r for r in result['train_scalars'] if key in r]
            ax.plot([r['step'] for r in points], [r[key] for r in points],
                    label=key, linewidth=2 if key == 'loss' else 0.8)
        ax.set_xlabel('iteration')
        ax.set_ylabel('training loss')
        ax.set_title(Path(TASKS[task]['config']).stem, fontsize=8)
        ax.legend(fontsize=7, loc='upper right')
        metrics = '\n'.join(f'{k}: {v:.3f}'
                             for k, v in result['metrics'].items())
        ax.text(0.03, 0.05, f'test after training\n{metrics}',
                transform=ax.transAxes, fontsize=9,
                bbox=dict(facecolor='white', alpha=0.8))
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--nproc', type=int, default=2)
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data', default='data/demo')
    parser.add_argument('--tasks', nargs='+',
                        choices=[*TASKS, *GROUPS], default=['det', 'seg'],
                        help='run in this order; det-pretrained needs cls '
                        'before it; ' + '; '.join(
                            f'{group}: {" ".join(tasks)}'
                            for group, tasks in GROUPS.items()))
    parser.add_argument('--iters', type=int,
                        help='training iterations (default: the configs\')')
    parser.add_argument('--num-train', type=int, default=240)
    parser.add_argument('--num-val', type=int, default=60)
    parser.add_argument('--size', type=int, default=256)
    args = parser.parse_args(argv)
    args.tasks = [t for name in args.tasks for t in GROUPS.get(name, [name])]
    for i, task in enumerate(args.tasks):
        before = TASKS[task].get('backbone_from')
        if before and before not in args.tasks[:i]:
            parser.error(f'--tasks: {task} starts from the backbone of '
                         f'{before}: list {before} before it')
    args.data = str(Path(args.data).resolve())
    work_dir = Path(args.work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()

    say(f'data: {args.data}')
    run([sys.executable, 'tools/make_demo_data.py', '--out', args.data,
         '--num-train', str(args.num_train), '--num-val', str(args.num_val),
         '--size', str(args.size)])
    results = {}
    for task in args.tasks:
        results[task] = train_and_test(task, args, work_dir, results)
    curves = work_dir / 'curves.png'
    plot_curves(results, curves)

    summary = {task: {k: float(v) for k, v in r['metrics'].items()}
               for task, r in results.items()}
    (work_dir / 'summary.json').write_text(json.dumps(summary, indent=2))
    minutes = (time.time() - start) / 60
    lines = [f'demo finished in {minutes:.1f} min on {args.nproc} processes']
    for task, result in results.items():
        metrics = ', '.join(f'{k} {v:.3f}' for k, v in
                            result['metrics'].items())
        lines += [f'{task}: {metrics}',
                  f'  checkpoint: {os.path.relpath(result["checkpoint"])}',
                  f'  metrics: {os.path.relpath(result["test_log"])}']
        if result['pictures'] is not None:
            lines.append(
                f'  predictions drawn: {len(result["pictures"])} pictures '
                f'under {os.path.relpath(work_dir / f"{task}_test/vis")}')
    lines += [f'curves: {os.path.relpath(curves)}',
              f'summary: {os.path.relpath(work_dir / "summary.json")}']
    say('\n'.join(lines))


if __name__ == '__main__':
    main()
