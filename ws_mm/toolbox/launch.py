"""Running the toolboxes' own ``train.py`` / ``test.py`` with ws_mm.

``tools/train.py`` and ``tools/test.py`` call :func:`run`. It reads the
config, picks mmdet, mmseg, mmpretrain or mmaction from its
``default_scope``, checks it (:func:`prepare`, :mod:`ws_mm.toolbox.checks`)
before anything is written, starts the process group of CPU-only
distributed runs when there is no GPU, and then runs the toolbox's script
(shipped in its wheel under ``.mim/tools/``) with the arguments unchanged
(:func:`run_script`).

CPU-only distributed runs need two things mmengine does not do by itself: it
calls ``torch.cuda.set_device`` when it starts the process group, so the
process group (gloo) is started here first and mmengine leaves it alone; and
its DDP wrapper passes ``device_ids=[LOCAL_RANK]``, which DDP rejects for CPU
modules, so ``model_wrapper_cfg.device_ids=None`` is added to the options.
With a GPU nothing is changed: nccl and the toolbox's normal path.
"""
import argparse
import importlib
import os
import runpy
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import List, NamedTuple, Optional

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction

from ..distributed import destroy_process_group
from .checks import Checkpoint, ConfigError, check_config

TOOLBOXES = ('mmdet', 'mmseg', 'mmpretrain', 'mmaction')


def toolbox_script(scope: str, tool: str) -> Path:
    """The toolbox's own ``tools/<tool>.py`` as shipped in its wheel."""
    package = Path(importlib.import_module(scope).__file__).parent
    script = package / '.mim' / 'tools' / f'{tool}.py'
    if not script.is_file():
        raise ConfigError(f'{script} is missing: reinstall {scope} from its '
                          'wheel (pip install --force-reinstall --no-deps)')
    return script


def _parse(tool: str, argv: List[str]) -> argparse.Namespace:
    """The few toolbox arguments ws_mm looks at; all are passed on as given."""
    parser = argparse.ArgumentParser(prog=f'tools/{tool}.py', add_help=False)
    parser.add_argument('config')
    if tool == 'test':
        parser.add_argument('checkpoint')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--launcher', default='none')
    parser.add_argument('--amp', action='store_true')
    parser.add_argument('--resume', nargs='?', const='auto')
    parser.add_argument('--work-dir')
    return parser.parse_known_args(argv)[0]


class Plan(NamedTuple):
    """What :func:`prepare` decided: the toolbox script's ``sys.argv`` and,
    for a distributed run without GPUs, how to start its gloo group."""
    argv: List[str]
    cpu_launcher: Optional[str]  # 'pytorch' or 'slurm'
    timeout: float               # seconds, the config's dist_cfg.timeout


def start_cpu_process_group(plan: Plan) -> None:
    """Start the gloo group mmengine would start with a CUDA call."""
    if plan.cpu_launcher == 'slurm':
        _slurm_env_to_torch_env()
    dist.init_process_group('gloo', timeout=timedelta(seconds=plan.timeout))


def _slurm_env_to_torch_env() -> None:
    """What mmengine's slurm launcher sets, with the local rank from SLURM
    (mmengine derives it from the GPU count, which is 0 here)."""
    env = os.environ
    if 'MASTER_ADDR' not in env:
        nodes = env['SLURM_NODELIST']
        env['MASTER_ADDR'] = subprocess.run(
            ['scontrol', 'show', 'hostname', nodes], capture_output=True,
            text=True, check=True).stdout.split()[0]
    env.setdefault('MASTER_PORT', '29500')
    env['WORLD_SIZE'] = env['SLURM_NTASKS']
    env['RANK'] = env['SLURM_PROCID']
    env['LOCAL_RANK'] = env.get('SLURM_LOCALID', '0')


def _cpu_ddp_options(cfg: Config) -> List[str]:
    options = ['env_cfg.dist_cfg.backend=gloo',
               'model_wrapper_cfg.device_ids=None']
    if cfg.get('model_wrapper_cfg') is None:
        # What the Runner's default DDP wrapper would have used.
        find_unused = cfg.get('find_unused_parameters', False)
        options += ['model_wrapper_cfg.type=MMDistributedDataParallel',
                    'model_wrapper_cfg.broadcast_buffers=False',
                    f'model_wrapper_cfg.find_unused_parameters={find_unused}']
    return ['--cfg-options', *options]


def prepare(tool: str, argv: List[str]) -> Plan:
    """Read and check the run before anything is written or started.

    Raises :class:`ConfigError` with a message that says what to do.
    """
    args = _parse(tool, argv)
    cfg = Config.fromfile(args.config)  # imports ws_mm via custom_imports
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    scope = cfg.get('default_scope')
    if scope not in TOOLBOXES:
        raise ConfigError(
            f'{args.config}: default_scope is {scope!r}; ws_mm tools run '
            f'configs of {", ".join(TOOLBOXES)} (set default_scope)')
    checkpoint = None  # what the tool loads instead of cfg.load_from
    if tool == 'test':
        checkpoint = Checkpoint('CHECKPOINT', args.checkpoint,
                                'give tools/test.py an existing checkpoint')
    elif args.resume not in (None, 'auto'):
        checkpoint = Checkpoint('--resume', args.resume,
                                'give --resume an existing checkpoint')
    elif args.resume == 'auto' and (scope != 'mmseg'
                                    or not cfg.get('load_from')):
        # What the toolbox resumes from (mmseg resumes from load_from if
        # set): the file named in <work_dir>/last_checkpoint, if any.
        work_dir = args.work_dir or cfg.get('work_dir') or os.path.join(
            'work_dirs', Path(args.config).stem)
        last = Path(work_dir, 'last_checkpoint')
        if last.is_file():
            checkpoint = Checkpoint(
                f'--resume ({last})', last.read_text().strip(),
                f'drop --resume to start afresh, or name an existing '
                f'checkpoint in {last}')
    check_config(cfg, training=tool == 'train', amp=args.amp,
                 distributed=args.launcher != 'none', checkpoint=checkpoint)

    argv = [str(toolbox_script(scope, tool)), *argv]
    if args.launcher == 'none' or torch.cuda.is_available():
        return Plan(argv, None, 0)
    if args.launcher not in ('pytorch', 'slurm'):
        raise ConfigError(f'--launcher {args.launcher} is not supported '
                          'without GPUs; use pytorch (tools/dist_train.sh) '
                          'or slurm')
    timeout = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('timeout', 1800)
    return Plan(argv + _cpu_ddp_options(cfg), args.launcher, timeout)


def run(tool: str, argv: List[str]) -> None:
    """Entry point of ``tools/train.py`` and ``tools/test.py``."""
    if not argv or argv[0] in ('-h', '--help'):
        toolboxes = f'{", ".join(TOOLBOXES[:-1])} or {TOOLBOXES[-1]}'
        print(f'usage: tools/{tool}.py CONFIG '
              f'{"CHECKPOINT " if tool == "test" else ""}[toolbox arguments]\n'
              'Runs the train/test script of the toolbox named by the '
              f"config's default_scope ({toolboxes}) with ws_mm loaded; "
              f'tools/{tool}.py CONFIG --help lists its arguments.')
        return
    try:
        if not os.path.isfile(argv[0]):
            raise ConfigError(f'config file {argv[0]!r} not found')
        if '-h' in argv or '--help' in argv:
            scope = Config.fromfile(argv[0]).get('default_scope')
            plan = Plan([str(toolbox_script(scope, tool)), *argv], None, 0)
        else:
            plan = prepare(tool, argv)
    except (ConfigError, FileNotFoundError) as error:
        if os.environ.get('RANK', '0') == '0':
            print(f'error: {error}', file=sys.stderr)
        sys.exit(2)
    if plan.cpu_launcher:
        start_cpu_process_group(plan)
    sys.argv = plan.argv
    run_script(plan.argv[0])


def run_script(path: str) -> None:
    """Run a toolbox script as ``__main__``; then, after a success, end the
    process group while the interpreter is whole
    (:func:`destroy_process_group`): left to the interpreter's exit, gloo's
    threads could abort the finished process (SIGABRT, "terminate called
    without an active exception"), which torchrun reports as a failed run.
    Only after a success: after an error, other ranks may still wait in a
    collective.
    """
    runpy.run_path(path, run_name='__main__')
    if dist.is_initialized():
        destroy_process_group()
