"""Development helpers shared by tools/ and tests/; not part of the ws_mm
package or wheel.

The demo configs and the options that point them at the data of
``tools/make_demo_data.py``, running a tool in a subprocess (:func:`run`,
:func:`first_error`) and reading what a toolbox run logged. A tool run as
``python tools/x.py`` imports it as ``devkit``; tests/conftest.py registers it
under that name.
"""
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Union

ROOT = Path(__file__).resolve().parents[1]

DEMO_CONFIGS = {
    'mmdet': 'configs/demo/mask-rcnn_r18_fpn_gn-ws-all_1xb2-500it_demo-'
    'coco.py',
    'mmseg': 'configs/demo/deeplabv3_r18-d16_gn-ws-all_1xb2-500it_demo-voc-'
    '256x256.py',
    'mmpretrain': 'configs/demo/resnet18_gn-ws_2xb32-300it_demo-imagenet-'
    '64px.py',
    'mmaction': 'configs/demo/tsm_r18_gn-ws_2xb8-1x1x8-300it_demo-sth-64px.py',
}
# The Mask R-CNN demo with its backbone from the mmpretrain demo's run.
DEMO_PRETRAINED_DET = ('configs/demo/mask-rcnn_r18-demo-imagenet-pre_fpn_'
                       'gn-ws-all_1xb2-500it_demo-coco.py')
# The mmaction demo with BCN+WS instead of GN+WS.
DEMO_BCN_TSM = ('configs/demo/tsm_r18_bcn-ws_2xb8-1x1x8-300it_demo-sth-'
                '64px.py')


def demo_data_options(scope: str, root: Union[str, Path]) -> Dict[str, str]:
    """Config options that point a demo config of ``scope`` (``'mmdet'``:
    the COCO layout, ``'mmseg'``: the VOC layout, ``'mmpretrain'``: the
    ImageNet layout, ``'mmaction'``: the rawframes) at the data in
    ``root``."""
    root = Path(root).resolve()
    if scope == 'mmdet':
        ann = f'{root}/coco/annotations/instances_val2017.json'
        options = {f'{split}_dataloader.dataset.data_root': f'{root}/coco/'
                   for split in ('train', 'val', 'test')}
        return dict(options, **{'val_evaluator.ann_file': ann,
                                'test_evaluator.ann_file': ann})
    data = dict(mmseg='VOCdevkit/VOC2012', mmpretrain='imagenet',
                mmaction='sth').get(scope)
    if data:
        return {f'{split}_dataloader.dataset.data_root': f'{root}/{data}'
                for split in ('train', 'val', 'test')}
    raise ValueError(f'no demo data for scope {scope!r}; use one of '
                     f'{sorted(DEMO_CONFIGS)}')


def cfg_options(options: Dict[str, object]) -> List[str]:
    """``key=value`` words for ``--cfg-options``."""
    return [f'{key}={value}' for key, value in options.items()]


def _flatten(obj, prefix=''):
    """{'a.b[0].c': value} of a config dict, without mmengine's _scope_."""
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if key != '_scope_':
                out.update(_flatten(value, f'{prefix}.{key}' if prefix
                                    else key))
        return out
    if isinstance(obj, (list, tuple)) and any(
            isinstance(x, dict) for x in obj):
        out = {}
        for i, value in enumerate(obj):
            out.update(_flatten(value, f'{prefix}[{i}]'))
        return out
    return {prefix: obj}


def plain(obj):
    """A config value as plain dicts, lists and tuples, without the
    ``_scope_`` mmengine adds to what a toolbox's base (``mmaction::``,
    ``mmpretrain::``) defines."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items() if k != '_scope_'}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    return obj


def config_diff(a, b) -> Set[str]:
    """The dotted keys (``model.backbone.norm_cfg.type``) whose values differ
    between two mmengine Configs, or that only one has."""
    fa, fb = _flatten(a.to_dict()), _flatten(b.to_dict())
    return {k for k in fa.keys() | fb.keys()
            if fa.get(k, '<absent>') != fb.get(k, '<absent>')}


def free_port() -> int:
    """A free loopback port, for launchers that need the number up front
    (``tools/dist_*.sh`` read ``PORT``; torchrun's static rendezvous cannot
    take 0). A port just released may still be held, which aborts the next
    process group, so each launch should get its own. The port is released
    when returned and another process could take it first."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run(args: Sequence[str], *, log: Optional[Path] = None,
        env: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
        stream: bool = False) -> subprocess.CompletedProcess:
    """Run a command from the repo root in a session of its own.

    Args:
        args: The command.
        log: A file for its output (stdout and stderr together).
        env: Its whole environment (default: this process's). ``PORT``
            (read by tools/dist_*.sh) is a free port of its own, as the
            previous launch's may still be held, unless ``env`` is given
            with one.
        timeout: Seconds after which the command and every process it
            started (torchrun's workers too) are killed.
        stream: Let the output go to the terminal.

    Returns:
        The finished process; its ``stdout`` and ``stderr`` (text) unless
        ``log`` or ``stream`` took the output.

    Raises:
        subprocess.TimeoutExpired: After ``timeout``, with the output so
            far when it was captured.
    """
    if log is not None and stream:
        raise ValueError('run: either log or stream, not both')
    env = dict(os.environ, PORT=str(free_port())) if env is None else {
        'PORT': str(free_port()), **env}
    with contextlib.ExitStack() as stack:
        out = err = None if stream else subprocess.PIPE
        if log is not None:
            out = stack.enter_context(open(log, 'w'))
            err = subprocess.STDOUT
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out,
                                stderr=err, text=True,
                                start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_all(proc)
            raise subprocess.TimeoutExpired(
                args, timeout, *proc.communicate()) from None
        except BaseException:  # Ctrl-C: the command's session missed it
            _kill_all(proc)
            raise
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def _kill_all(proc: subprocess.Popen) -> None:
    """Kill the command's process group and the groups of all processes
    below it: torchrun starts each worker in a session of its own, which
    a killed torchrun would leave running."""
    _signal_group(proc.pid, signal.SIGSTOP)  # no new processes meanwhile
    for group in {proc.pid, *_descendant_groups(proc.pid)}:
        _signal_group(group, signal.SIGKILL)
    proc.wait()


def _signal_group(group: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, sig)


def _descendant_groups(pid: int) -> Set[int]:
    """The process groups of the processes below ``pid``, read from /proc
    (Linux; none elsewhere)."""
    children, group = {}, {}
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try:  # "pid (name) state ppid pgrp ...", the name may hold ')'
            fields = stat.read_text().rsplit(')', 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        child = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(child)
        group[child] = int(fields[2])
    below, level = [], [pid]
    while level:
        level = [c for p in level for c in children.get(p, [])]
        below += level
    return {group[c] for c in below}


# A line that names what went wrong, after torchrun's "[rankN]:" prefix:
# Python's "XxxError: message", a tool's or argparse's "error: message", a
# C++ abort (gloo's threads at exit), a rank killed by a signal (torchrun's
# summary). "Traceback" only leads to the exception line.
_ERROR_LINE = re.compile(r'[\w.]*(Error|Exception)(: \S|$)'
                         r'|(\S+: )?error: '
                         r'|.*terminate called'
                         r'|.*\bSignal \d+')


def first_error(output: str) -> str:
    """The first line of ``output`` that names an error (in a 2-process
    run, torchrun's summary comes last), else its last line; at most 300
    characters."""
    lines = [re.sub(r'^\[rank\d+\]:', '', line).strip()
             for line in output.splitlines()]
    lines = [line for line in lines if line] or ['(no output)']
    hit = next((line for line in lines if _ERROR_LINE.match(line)), lines[-1])
    return hit[:300]


def read_scalars(work_dir: Path) -> List[dict]:
    """What the newest run in a toolbox work dir logged to its visualizer
    (``<timestamp>/vis_data/scalars.json``), one dict a line; [] if none.
    A rerun into the same work dir starts a new timestamped folder."""
    runs = sorted(Path(work_dir).glob('*/vis_data/scalars.json'))
    if not runs:
        return []
    return [json.loads(line) for line in runs[-1].read_text().splitlines()]


def logged_test_metrics(log: Path) -> Dict[str, float]:
    """The metrics of a toolbox test run, from rank 0's log
    (``<timestamp>/<timestamp>.log``). Not from ``<timestamp>.json``:
    mmengine's LoggerHook.after_test_epoch writes that file from every rank
    at once, which can leave it corrupt."""
    line = [line for line in log.read_text().splitlines()
            if 'Iter(test)' in line][-1]
    return {k: float(v) for k, v in re.findall(r'(\S+): (-?\d+\.\d+)', line)}
