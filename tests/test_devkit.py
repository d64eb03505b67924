"""tools/devkit.py: the subprocess runner of the tools and tests, and the
error line it reports of a failed run."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from devkit import ROOT, first_error, run  # conftest.py loads it

# What torchrun prints after a worker it started died.
CHILD_FAILED = """\
Traceback (most recent call last):
  File "/venv/bin/torchrun", line 8, in <module>
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
tools/train.py FAILED
  error_file: <N/A>
  traceback : {traceback}
"""


def test_first_error_names_the_exception_of_a_two_process_run():
    log = ('[rank0]: Traceback (most recent call last):\n'
           '[rank0]:   File "train.py", line 1, in <module>\n'
           '[rank0]: ValueError: Expected more than 1 value per channel\n'
           '[rank1]: ValueError: Expected more than 1 value per channel\n'
           + CHILD_FAILED.format(traceback='To enable traceback see: '
                                 'https://pytorch.org/docs/stable/elastic/'
                                 'errors.html'))
    assert first_error(log) == ('ValueError: Expected more than 1 value per '
                                'channel')


def test_first_error_names_an_abort_or_a_signal():
    signal = 'Signal {} received by PID 123'
    killed = CHILD_FAILED.format(traceback=signal.format('9 (SIGKILL)'))
    assert first_error(killed) == ('traceback : Signal 9 (SIGKILL) received '
                                   'by PID 123')
    aborted = ('[W1206] Warning: gloo is shutting down\n'
               'terminate called without an active exception\n'
               + CHILD_FAILED.format(traceback=signal.format('6 (SIGABRT)')))
    assert first_error(aborted) == ('terminate called without an active '
                                    'exception')


def test_first_error_else_the_last_line():
    assert first_error('error: config file nope.py not found\n') == (
        'error: config file nope.py not found')
    assert first_error('no exception\nlast line\n\n') == 'last line'
    assert first_error('') == '(no output)'
    assert first_error('x' * 400) == 'x' * 300


def test_run_captures_the_output_from_the_root_on_a_port_of_its_own(
        monkeypatch):
    script = ('import os, sys; print(os.getcwd(), os.environ.get("PORT")); '
              'print("oops", file=sys.stderr); sys.exit(3)')
    proc = run([sys.executable, '-c', script])
    cwd, port = proc.stdout.split()
    assert (proc.returncode, Path(cwd), proc.stderr) == (3, ROOT, 'oops\n')
    assert port.isdigit()
    # Not this process's PORT, which back-to-back launches would share.
    monkeypatch.setenv('PORT', '1234')
    assert run([sys.executable, '-c', script]).stdout.split()[1] != '1234'
    proc = run([sys.executable, '-c', script], env=dict(os.environ,
                                                        PORT='1234'))
    assert proc.stdout.split()[1] == '1234'


def state(pid):
    """The process's state letter (``Z``: a zombie), '' if it is gone."""
    try:
        stat = Path(f'/proc/{pid}/stat').read_text()
    except FileNotFoundError:
        return ''
    return stat.rsplit(')', 1)[1].split()[0]  # after the name, "(...)"


@pytest.mark.skipif(not Path('/proc').is_dir(), reason='reads /proc')
def test_run_timeout_kills_the_whole_process_group_and_raises(tmp_path):
    """As torchrun and its workers: a child with two children, which keep
    the output pipe open, one in the child's process group and one in a
    session of its own (torchrun's workers)."""
    pids = tmp_path / 'pids'
    command = ['bash', '-c', 'sleep 60 & grandchild=$!; setsid sleep 60 & '
               f'echo $$ $grandchild $! > {pids}; wait']
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired,
                       match=r"'bash', '-c'.* timed out after 3 seconds"):
        run(command, timeout=3)
    assert time.monotonic() - start < 30
    for pid in pids.read_text().split():
        deadline = time.monotonic() + 10  # a zombie until its parent reaps
        while state(pid) not in ('', 'Z') and time.monotonic() < deadline:
            time.sleep(0.1)
        assert state(pid) in ('', 'Z'), f'{pid} still alive'
