"""Which Python the launchers run (tools/python.sh): the one rule of every
launcher script."""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def chosen_python(path, python=None, tools=ROOT / 'tools'):
    """The interpreter tools/python.sh picks with ``PATH=path``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ('PYTHON', 'PYTHONPATH')}
    env['PATH'] = path
    if python:
        env['PYTHON'] = python
    return subprocess.run(
        ['bash', '-c', f'source {tools}/python.sh; echo "$PYTHON"; '
         'echo "$PYTHONPATH"'],
        capture_output=True, text=True, env=env, timeout=60)


def make_env(folder, with_stack):
    """A virtualenv's bin/, as activating it puts it first on PATH; with
    the stack, it sees the packages of the interpreter running the tests."""
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip',
                    str(folder)], check=True, timeout=120)
    if with_stack:
        (site, ) = folder.glob('lib/python*/site-packages')
        (site / 'stack.pth').write_text(sysconfig.get_paths()['purelib'])
    return str(folder / 'bin')


def test_the_activated_environment_wins(tmp_path):
    # The interpreter running this test has ws_mm's dependencies.
    user = make_env(tmp_path / 'user', with_stack=True)
    out = chosen_python(f'{user}:/usr/bin:/bin')
    assert out.returncode == 0, out.stderr
    python, pythonpath = out.stdout.splitlines()
    assert python == f'{user}/python'
    assert pythonpath == str(ROOT)  # the checkout first, as the toolboxes do


def test_python_wins_over_everything(tmp_path):
    user = make_env(tmp_path / 'user', with_stack=True)
    out = chosen_python(f'{user}:/usr/bin:/bin', python='/opt/my/python')
    assert out.stdout.splitlines()[0] == '/opt/my/python'


def test_an_environment_without_the_stack_falls_back_to_the_repo_venv(
        tmp_path):
    bare = make_env(tmp_path / 'bare', with_stack=False)
    out = chosen_python(f'{bare}:/usr/bin:/bin')
    venv_python = ROOT / '.venv/bin/python'
    if venv_python.exists():
        assert out.stdout.splitlines()[0] == str(venv_python)
    else:  # a checkout used from the user's own environment only
        assert out.returncode == 2


def test_no_python_with_the_stack_is_a_clear_error(tmp_path):
    # A checkout without .venv: tools/python.sh finds the root from its
    # own location.
    (tmp_path / 'tools').mkdir()
    shutil.copy(ROOT / 'tools/python.sh', tmp_path / 'tools')
    bare = make_env(tmp_path / 'bare', with_stack=False)
    out = chosen_python(f'{bare}:/usr/bin:/bin', tools=tmp_path / 'tools')
    assert out.returncode == 2
    assert out.stderr.startswith('error: no Python with torch, mmengine and '
                                 'mmcv found: activate your OpenMMLab')
