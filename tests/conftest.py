"""What the tests share: ports, tools/ scripts as modules, subprocess runs of
the tools, one demo data set per test run, and a clean start for every test.

tools/devkit.py, the helpers tools and tests share, is importable as
``devkit`` once this file is loaded.

Markers (pytest.ini): ``e2e`` for tests that run tools/ or toolbox scripts in
subprocesses (minutes), ``dist`` for those that start a process group over
several processes, ``slow`` for full-size models. ``make test-fast`` runs
``-m "not e2e and not slow"``. ``gpu`` for tests that need CUDA: skipped,
with the reason, where torch sees no CUDA device; ``make test-gpu`` runs
them with ``--report`` (a JSON report of outcomes and of the values the
tests ``record``). tests/references.py (the float64 references) is
importable as ``references``.
"""
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _import_file(name, path):
    """The Python file ``path`` imported as a module named ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Registered under its own name, for the tools loaded by ``load_tool`` (they
# ``import devkit``) and for the tests; tools/ itself stays off sys.path.
devkit = sys.modules['devkit'] = _import_file('devkit',
                                              ROOT / 'tools' / 'devkit.py')
# tests/references.py likewise, for the tests (``import references``): the
# float64 references that the CPU and the GPU tests share.
references = sys.modules['references'] = _import_file(
    'references', ROOT / 'tests' / 'references.py')

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
    """devkit.free_port: where an API takes port 0 (``tcp://...:0``) pass 0
    instead."""
    return devkit.free_port


@pytest.fixture
def torchrun():
    """A function ``(nproc, script, *args)`` -> the argv that runs ``script``
    on ``nproc`` local processes with torchrun, on a port of its own
    (``--standalone`` is no substitute: torch 2.0's takes the fixed port
    29400, which the previous run may still hold)."""
    def argv(nproc, script, *args):
        return [sys.executable, '-m', 'torch.distributed.run', '--nnodes=1',
                '--master_addr=127.0.0.1',
                f'--master_port={devkit.free_port()}',
                f'--nproc_per_node={nproc}', str(script), *map(str, args)]
    return argv


@pytest.fixture
def two_ranks(torchrun, run_tool, tmp_path):
    """A function ``(name, *args)`` that runs tests/dist_scripts/NAME.py on
    2 processes with torchrun (it writes ``rank<r>.pt`` into the folder it
    is given first) and returns what each rank saved."""
    def run(name, *args):
        script = Path(__file__).parent / 'dist_scripts' / f'{name}.py'
        proc = run_tool(torchrun(2, script, tmp_path, *args), timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return [torch.load(tmp_path / f'rank{r}.pt', weights_only=False)
                for r in range(2)]
    return run


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
            modules[name] = _import_file(f'tool_{name}',
                                         ROOT / 'tools' / f'{name}.py')
        return modules[name]

    return load


def _run_tool(args, env=None, timeout=TOOL_TIMEOUT):
    """Run ``args`` as a user would (devkit.run: from the repo root, on a
    free port unless ``env`` sets PORT); return the completed process with
    its output. ``env``: variables to add. The launchers run the
    interpreter running the tests (``PYTHON``, see tools/python.sh),
    whichever environment that is. One thread per process: numbers compared
    across processes must not depend on the machine's core count. On
    timeout the whole process group goes (torchrun's workers too), then the
    test fails."""
    env = {**{k: v for k, v in os.environ.items() if k not in FOREIGN_ENV},
           'PYTHON': sys.executable, 'OMP_NUM_THREADS': '1', **(env or {})}
    try:
        return devkit.run(args, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f'{error}:\n{error.stdout[-3000:]}\n'
                    f'{error.stderr[-3000:]}')


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


# ------------------------------------------------- GPU tests and --report
# Tests marked ``gpu`` need CUDA: where torch sees no CUDA device they are
# skipped, with the reason (``make test-gpu`` runs ``-m gpu``). ``--report
# PATH`` writes a JSON report at the end of the session: the environment,
# each test's outcome and seconds, and the values it recorded (``record``).

def pytest_addoption(parser):
    group = parser.getgroup('ws_mm')
    group.addoption('--report', metavar='PATH', type=Path,
                    help='write a JSON report: the environment (torch, CUDA, '
                    'cuDNN, GPUs, mmcv, ws_mm), each test\'s outcome and '
                    'seconds, and the values the tests recorded')
    group.addoption('--speed-rounds', type=int, default=5, metavar='N',
                    help='interleaved timing rounds of the speed tests '
                    '(default 5)')
    group.addoption('--speed-min-seconds', type=float, default=0.1,
                    metavar='S', help='time per candidate per round of the '
                    'speed tests (default 0.1)')


def no_cuda_reason():
    build = (f'a CUDA {torch.version.cuda} build' if torch.version.cuda else
             'a CPU-only build')
    return f'no CUDA device visible to torch {torch.__version__} ({build})'


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=no_cuda_reason())
    for item in items:
        if item.get_closest_marker('gpu'):
            item.add_marker(skip)


def pytest_configure(config):
    path = config.getoption('report')
    if path is not None:
        config.pluginmanager.register(JSONReport(path), 'ws_mm_json_report')


class Recorder:
    """``record(key, value, tol=None)`` keeps ``value`` (a number, or a dict
    of them) for the report, under the test, with the tolerance ``tol`` it
    is to stay within, if any; it returns ``value``. ``record.check()``
    then fails the test if any value is over its tolerance (NaN included),
    naming each."""

    def __init__(self, item):
        self.item = item
        self.bounded = {}

    def __call__(self, key, value, tol=None):
        if isinstance(value, torch.Tensor):
            value = value.item()
        if tol is None:
            entry = value
        else:
            value = float(value)
            entry = self.bounded[key] = dict(value=value, tol=float(tol))
        self.item.user_properties.append((key, entry))
        return value

    def check(self):
        over = [f"{key}: {v['value']:.3g} > {v['tol']:.3g}"
                for key, v in self.bounded.items()
                if not v['value'] <= v['tol']]
        assert not over, (f'{len(over)} of {len(self.bounded)} over '
                          'tolerance: ' + '; '.join(over))


@pytest.fixture
def record(request):
    """See :class:`Recorder`."""
    return Recorder(request.node)


def environment():
    """What the numbers of a report depend on."""
    import platform

    import mmcv
    import mmengine

    import ws_mm
    cuda = torch.cuda.is_available()
    count = torch.cuda.device_count() if cuda else 0
    return dict(
        python=platform.python_version(), torch=torch.__version__,
        cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
        gpu_count=count,
        gpus=[torch.cuda.get_device_name(i) for i in range(count)],
        cuda_visible_devices=os.environ.get('CUDA_VISIBLE_DEVICES'),
        cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
        matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
        torch_threads=torch.get_num_threads(), mmengine=mmengine.__version__,
        mmcv=mmcv.__version__, ws_mm=ws_mm.__version__)


class JSONReport:
    """The ``--report`` plugin: per test (node id) its outcome (passed,
    failed, error in set-up or teardown, skipped with the reason, xfailed),
    its seconds (set-up, call and teardown) and the recorded values."""

    def __init__(self, path):
        self.path = Path(path)
        self.tests = {}
        self.start = time.time()

    def pytest_runtest_logreport(self, report):
        test = self.tests.setdefault(report.nodeid,
                                     dict(outcome='passed', seconds=0.0))
        test['seconds'] = round(test['seconds'] + report.duration, 3)
        if report.failed:
            test['outcome'] = 'failed' if report.when == 'call' else 'error'
            test['message'] = report.longreprtext[-3000:]
        elif report.skipped and test['outcome'] == 'passed':
            if hasattr(report, 'wasxfail'):
                test['outcome'] = 'xfailed'
            else:
                test['outcome'] = 'skipped'
                reason = (report.longrepr[2]
                          if isinstance(report.longrepr, tuple)
                          else str(report.longrepr))
                test['reason'] = reason.removeprefix('Skipped: ')
        if report.user_properties:
            test.setdefault('values', {}).update(report.user_properties)

    def pytest_sessionfinish(self, session, exitstatus):
        report = dict(
            environment=environment(),
            started=time.strftime('%Y-%m-%dT%H:%M:%S%z',
                                  time.localtime(self.start)),
            seconds=round(time.time() - self.start, 1),
            args=list(session.config.invocation_params.args),
            exitstatus=int(exitstatus), tests=self.tests)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(report, indent=1, default=str) + '\n')

    def pytest_terminal_summary(self, terminalreporter):
        terminalreporter.write_line(f'report: {self.path}')
