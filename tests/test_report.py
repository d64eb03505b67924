"""conftest.py's ``--report`` option, ``record`` fixture and ``gpu`` marker,
on a small generated test file run by pytest in a subprocess: the JSON
report holds the environment, each test's outcome, seconds and recorded
values (with their tolerances), a value over its tolerance fails its test
and the run, and without a CUDA device the ``gpu`` tests are skipped with
the reason, so that ``-m gpu`` exits 0."""
import json
import os
import sys
import textwrap
from pathlib import Path

import mmcv
import torch

import ws_mm

TESTS = Path(__file__).resolve().parent

TINY = '''
import pytest


def test_within(record):
    record('error', 1e-9, tol=1e-6)
    record('ratio', dict(median=1.1, min=1.0, max=1.2))
    record.check()


def test_over(record):
    record('error', 0.5, tol=0.1)
    record('fine', 0.0, tol=0.1)
    record('nan', float('nan'), tol=1.0)
    record.check()


@pytest.mark.gpu
def test_on_gpu(record):
    record('ran', 1)


def test_skipped():
    pytest.skip('not here')
'''


def run_pytest(run_tool, tmp_path, *args):
    """pytest on the tiny test file with this repo's pytest.ini and conftest
    (as plugin: the file lies outside tests/), with no CUDA device visible;
    the process and its report."""
    test_file = tmp_path / 'test_tiny.py'
    test_file.write_text(textwrap.dedent(TINY))
    report = tmp_path / 'out' / 'report.json'
    report.unlink(missing_ok=True)
    path = os.pathsep.join(filter(None, [str(TESTS),
                                         os.environ.get('PYTHONPATH')]))
    proc = run_tool([sys.executable, '-m', 'pytest', '-c',
                     str(TESTS.parent / 'pytest.ini'), '-p', 'conftest',
                     '-rs', '--report', str(report), *args, str(test_file)],
                    env={'PYTHONPATH': path, 'CUDA_VISIBLE_DEVICES': ''},
                    timeout=300)
    return proc, json.loads(report.read_text()) if report.exists() else None


def test_report_has_outcomes_values_and_skip_reasons(tmp_path, run_tool):
    proc, report = run_pytest(run_tool, tmp_path)
    # a value over its tolerance fails its test, and the run
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report['exitstatus'] == 1
    assert f"report: {tmp_path / 'out' / 'report.json'}" in proc.stdout

    env = report['environment']
    assert env['torch'] == torch.__version__
    assert env['mmcv'] == mmcv.__version__
    assert env['ws_mm'] == ws_mm.__version__
    assert env['cuda'] == torch.version.cuda
    assert env['gpu_count'] == 0 and env['gpus'] == []
    assert {'cudnn', 'python'} <= set(env)

    tests = {nodeid.split('::')[-1]: test
             for nodeid, test in report['tests'].items()}
    assert list(tests) == ['test_within', 'test_over', 'test_on_gpu',
                           'test_skipped']
    for test in tests.values():
        assert test['seconds'] >= 0

    within = tests['test_within']
    assert within['outcome'] == 'passed'
    assert within['values'] == {
        'error': {'value': 1e-9, 'tol': 1e-6},
        'ratio': {'median': 1.1, 'min': 1.0, 'max': 1.2}}

    over = tests['test_over']
    assert over['outcome'] == 'failed'
    assert over['values']['error'] == {'value': 0.5, 'tol': 0.1}
    assert over['values']['fine'] == {'value': 0.0, 'tol': 0.1}
    assert '2 of 3 over tolerance: error: 0.5 > 0.1; nan: nan > 1' in (
        over['message'])

    # no CUDA device: skipped with the reason, as pytest -rs shows it
    build = (f'a CUDA {torch.version.cuda} build' if torch.version.cuda
             else 'a CPU-only build')
    reason = f'no CUDA device visible to torch {torch.__version__} ({build})'
    gpu = tests['test_on_gpu']
    assert gpu == {'outcome': 'skipped', 'seconds': gpu['seconds'],
                   'reason': reason}
    assert reason in proc.stdout
    assert tests['test_skipped']['outcome'] == 'skipped'
    assert tests['test_skipped']['reason'] == 'not here'


def test_only_gpu_tests_without_cuda_skip_and_exit_0(tmp_path, run_tool):
    proc, report = run_pytest(run_tool, tmp_path, '-m', 'gpu')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert '1 skipped, 3 deselected' in proc.stdout
    assert 'no CUDA device visible' in proc.stdout
    assert [(nodeid.split('::')[-1], test['outcome'])
            for nodeid, test in report['tests'].items()] == [
                ('test_on_gpu', 'skipped')]
    assert report['exitstatus'] == 0
