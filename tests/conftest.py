"""What the tests share: ports, tools/ scripts as modules, subprocess runs of
the tools, one demo data set per test run, and a clean start for every test.

Markers (pytest.ini): ``e2e`` for tests that run tools/ or toolbox scripts in
subprocesses (minutes), ``dist`` for those that start a process group over
several processes. ``make test-fast`` runs ``-m "not e2e"``.
"""
import importlib.util
import os
import signal
import socket
import subprocess
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from ws_mm.toolbox import launch

ROOT = Path(__file__).resolve().parents[1]

# Generous for a slow 2-core machine (a 2-process training run with its
# evaluation takes 1-2 min here), but a hung process group cannot stall a
# run for gloo's 30 min default.
TOOL_TIMEOUT = 900

# Set on some machines (CI runners, SLURM jobs) and read by the launchers or
# by ws_mm: a tool run by a test must not pick them up.
FOREIGN_ENV = ('PORT', 'MASTER_ADDR', 'MASTER_PORT', 'RANK', 'LOCAL_RANK',
               'WORLD_SIZE', 'NNODES', 'NODE_RANK', 'WS_MM_UNSAFE_LOAD')


@pytest.fixture(autouse=True)
def clean_global_state(monkeypatch):
    """Each test starts as in a fresh process, whatever ran before it:
    no mmengine default scope (init_default_scope and every Runner set one,
    and registries resolve through it), the same torch random state, and
    none of the variables above."""
    from mmengine.registry import DefaultScope
    monkeypatch.setattr(DefaultScope, '_instance_dict', OrderedDict())
    for name in FOREIGN_ENV:
        monkeypatch.delenv(name, raising=False)
    torch.manual_seed(0)


@pytest.fixture
def free_port():
    """ws_mm.toolbox.launch.free_port: where an API takes port 0
    (``tcp://...:0``) pass 0 instead."""
    return launch.free_port


@pytest.fixture
def torchrun():
    """A function ``(nproc, script, *args)`` -> the argv that runs ``script``
    on ``nproc`` local processes with torchrun, on a port of its own
    (``--standalone`` is no substitute: torch 2.0's takes the fixed port
    29400, which the previous run may still hold)."""
    def argv(nproc, script, *args):
        return [sys.executable, '-m', 'torch.distributed.run', '--nnodes=1',
                '--master_addr=127.0.0.1',
                f'--master_port={launch.free_port()}',
                f'--nproc_per_node={nproc}', str(script), *map(str, args)]
    return argv


@pytest.fixture
def refused_port():
    """A loopback port that refuses connections for the whole test: bound
    here but not listening, so no other process can listen on it meanwhile
    (a port found free and closed again could be taken)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        yield s.getsockname()[1]


@pytest.fixture(scope='session')
def load_tool():
    """A function that imports tools/<name>.py as a module (tools/ is not a
    package; nothing is added to sys.path, where tools/test.py and
    tools/train.py would shadow other modules)."""
    modules = {}

    def load(name):
        if name not in modules:
            spec = importlib.util.spec_from_file_location(
                f'tool_{name}', ROOT / 'tools' / f'{name}.py')
            modules[name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(modules[name])
        return modules[name]

    return load


def _run_tool(args, env=None, timeout=TOOL_TIMEOUT):
    """Run ``args`` from the repo root as a user would; return the completed
    process with its output. The launchers run the interpreter running the
    tests (``PYTHON``, see tools/python.sh), whichever environment that is.
    One thread per process: numbers compared across processes must not
    depend on the machine's core count. On timeout the whole process group
    goes (torchrun's workers too), then it fails."""
    env = {**{k: v for k, v in os.environ.items() if k not in FOREIGN_ENV},
           'PYTHON': sys.executable, 'OMP_NUM_THREADS': '1', **(env or {})}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f'{args} still running after {timeout} s:\n'
                    f'{stdout[-3000:]}\n{stderr[-3000:]}')
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


@pytest.fixture(scope='session')
def run_tool():
    """``_run_tool`` above, for the tests that run tools in subprocesses."""
    return _run_tool


@dataclass(frozen=True)
class DemoData:
    """A folder written by tools/make_demo_data.py, and its arguments."""
    root: Path
    seed: int = 0  # tools/demo.py's default: the demo reuses this data
    size: int = 128
    num_train: int = 8
    num_val: int = 4

    @property
    def args(self):
        return ['--seed', str(self.seed), '--size', str(self.size),
                '--num-train', str(self.num_train), '--num-val',
                str(self.num_val)]


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory, load_tool):
    """The small demo data set (COCO and VOC layouts), written once per test
    run. Tests only read it; tests of the data tool's own behaviour write
    their own."""
    data = DemoData(tmp_path_factory.mktemp('demo_data'))
    load_tool('make_demo_data').main(data.args + ['--out', str(data.root)])
    return data
