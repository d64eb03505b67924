"""Stress check of the 2-process launchers: train and test, N times over.

    python tools/stress_dist.py N [--scopes mmdet mmseg] [--work-dir DIR]

Each round trains each demo model for a few iterations with
``tools/dist_train.sh`` on 2 processes, then tests the checkpoint with
``tools/dist_test.sh``, back to back, each launch on a new free port. Every
launch must exit 0 with its work done (a checkpoint, metrics) within
``--timeout`` seconds; anything else counts as a failure, with its first error
line shown and its whole output kept under the work dir. Ends with how many
launches of each kind exited 0, and exits 1 if any did not. Not part of
``make test`` (1 to 3 minutes a round on 2 cores); run it after touching the
launchers or the process-group handling.
"""
import argparse
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from devkit import (DEMO_CONFIGS, cfg_options, demo_data_options,
                    first_error, run)

ITERS = 2


def launch(args, log: Path, timeout: float):
    """Run one launcher, its output in ``log``; a run past ``timeout`` is
    killed with all its processes (a hang). Returns (exit code or 'hang',
    seconds)."""
    start = time.monotonic()
    try:
        code = run(args, log=log, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        code = 'hang'
    return code, time.monotonic() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('rounds', type=int)
    parser.add_argument('--scopes', nargs='+', choices=sorted(DEMO_CONFIGS),
                        default=['mmdet', 'mmseg'])
    parser.add_argument('--work-dir', type=Path,
                        default=Path('work_dirs/stress_dist'))
    parser.add_argument('--timeout', type=float, default=600,
                        help='seconds after which a launch counts as hung')
    args = parser.parse_args(argv)
    work = args.work_dir.resolve()
    data = work / 'data'
    run([sys.executable, 'tools/make_demo_data.py', '--out', str(data),
         '--num-train', '8', '--num-val', '4', '--size', '128'],
        stream=True).check_returncode()

    ok, total, start = Counter(), Counter(), time.monotonic()
    for r in range(1, args.rounds + 1):
        for scope in args.scopes:
            run_dir = work / f'round{r:03d}' / scope
            run_dir.mkdir(parents=True, exist_ok=True)
            options = ['--cfg-options',
                       *cfg_options(demo_data_options(scope, data)),
                       f'train_cfg.max_iters={ITERS}',
                       f'train_cfg.val_interval={ITERS + 1}',
                       f'default_hooks.checkpoint.interval={ITERS}']
            checkpoint = run_dir / f'iter_{ITERS}.pth'
            steps = [
                ('train', ['bash', 'tools/dist_train.sh', DEMO_CONFIGS[scope],
                           '2', '--work-dir', str(run_dir), *options],
                 lambda: checkpoint.is_file()),
                ('test', ['bash', 'tools/dist_test.sh', DEMO_CONFIGS[scope],
                          str(checkpoint), '2', '--work-dir',
                          str(run_dir / 'test'), *options],
                 lambda: any((run_dir / 'test').glob('*/*.json'))),
            ]
            for kind, command, done in steps:
                log = run_dir / f'{kind}.log'
                code, seconds = launch(command, log, args.timeout)
                key = f'{kind} {scope}'
                total[key] += 1
                if code == 0 and done():
                    ok[key] += 1
                    print(f'round {r} {key}: ok ({seconds:.0f} s)', flush=True)
                    continue
                what = 'exit 0 but its output is missing' if code == 0 \
                    else f'exit {code}'
                error = first_error(log.read_text(errors='replace'))
                print(f'round {r} {key}: FAILED, {what} ({seconds:.0f} s): '
                      f'{error}\n  log: {log}', flush=True)
                if kind == 'train':
                    break  # nothing to test
    minutes = (time.monotonic() - start) / 60
    print(f'\n{args.rounds} rounds in {minutes:.1f} min:')
    for key in total:
        print(f'  {key}: {ok[key]}/{total[key]} exited 0')
    sys.exit(0 if ok == total else 1)


if __name__ == '__main__':
    main()
