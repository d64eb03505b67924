"""tools/check_gpu.py on a CPU: its checks pass with their measured values
and tolerances in the report, the CUDA-only ones are skipped with the reason,
a failing check makes the exit status 1, and without a GPU it says so."""
import json
import math
import sys

import pytest
import torch

TOOL = 'tools/check_gpu.py'


def check_gpu(run_tool, tmp_path, *args):
    """Run the tool on the CPU; its process and its report."""
    out = tmp_path / 'report.json'
    proc = run_tool([sys.executable, TOOL, '--device', 'cpu', *args, '--out',
                     str(out)])
    return proc, json.loads(out.read_text()) if out.is_file() else None


def bounded(values):
    """The (value, tol) pairs of a check's values."""
    return {k: (v['value'], v['tol']) for k, v in values.items()
            if isinstance(v, dict) and 'tol' in v}


def test_without_cuda_it_says_so_and_exits_0(tmp_path, run_tool):
    if torch.cuda.is_available():
        pytest.skip('checks the machine without a GPU')
    out = tmp_path / 'report.json'
    proc = run_tool([sys.executable, TOOL, '--out', str(out)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines() == [
        'check_gpu: no CUDA GPU here, nothing checked (--device cpu runs the '
        'checks a CPU can run)']
    assert not out.exists()
    # Asking for CUDA by name is an error, before anything runs.
    proc = run_tool([sys.executable, TOOL, '--device', 'cuda', '--out',
                     str(out)])
    assert proc.returncode == 2
    assert 'error: --device cuda: no CUDA GPU' in proc.stderr
    assert not out.exists()


def test_exactness_checks_pass_with_their_values(tmp_path, run_tool):
    proc, report = check_gpu(run_tool, tmp_path, '--only', 'ws-mmcv',
                             'bcn-modes', 'bcn-sync')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    checks = report['checks']
    assert list(checks) == ['ws-mmcv', 'bcn-modes', 'bcn-sync']
    assert report['device'] == 'cpu' and report['torch'] == torch.__version__

    # 3 shapes x 2 dtypes x (output, 3 gradients), each within tolerance.
    ws = bounded(checks['ws-mmcv']['values'])
    assert checks['ws-mmcv']['status'] == 'pass' and len(ws) == 24
    for key, (value, tol) in ws.items():
        assert 0 <= value <= tol, key
        if 'float64' in key:  # near float64's machine precision
            assert tol < 1e-12, key
        else:  # a real float32 rounding error was measured: not compared
            assert value > 0, key  # with itself

    bcn = bounded(checks['bcn-modes']['values'])
    assert checks['bcn-modes']['status'] == 'pass'
    assert {k.split(' ', 1)[1] for k in bcn} == {
        'batch mode', 'batch mode grad_input', 'estimate mode, first batch',
        'estimates = batch mean', 'estimates = batch variance',
        'estimate mode eval = batch mode'}
    for key, (value, tol) in bcn.items():
        assert value <= tol < (1e-12 if 'float64' in key else 1e-4), key

    assert checks['bcn-sync']['status'] == 'skip'
    assert 'needs 2 CUDA GPUs' in checks['bcn-sync']['summary']
    lines = proc.stdout.splitlines()  # ws_mm's log line comes first
    table = lines[lines.index(next(line for line in lines
                                   if line.startswith('check '))):]
    assert table[0].split() == ['check', 'status', 'seconds', 'summary']
    assert [line.split()[:2] for line in table[1:4]] == [
        ['ws-mmcv', 'pass'], ['bcn-modes', 'pass'], ['bcn-sync', 'skip']]
    assert table[-1].startswith('0 failed; report: ')


def test_a_check_over_tolerance_fails_the_run(tmp_path, run_tool):
    """With every tolerance scaled to 0, any rounding error fails."""
    proc, report = check_gpu(run_tool, tmp_path, '--only', 'bcn-modes',
                             '--tol-scale', '0')
    assert proc.returncode == 1, proc.stderr[-3000:]
    result = report['checks']['bcn-modes']
    assert result['status'] == 'fail'
    assert 'over tolerance' in result['summary']
    over = [k for k, (value, tol) in bounded(result['values']).items()
            if value > tol]
    assert over and all(tol == 0 for _, tol in bounded(
        result['values']).values())
    assert proc.stdout.splitlines()[-1].startswith('1 failed (bcn-modes)')


def cpu_runs_fp16_autocast():
    x = torch.ones(1, 1, 2, 2)
    with torch.autocast('cpu', dtype=torch.float16):
        return torch.nn.functional.conv2d(x, x).dtype == torch.float16


@pytest.mark.e2e
def test_compiled_kernels_autocast_training_and_speed_on_cpu(tmp_path,
                                                             run_tool):
    proc, report = check_gpu(run_tool, tmp_path, '--only', 'compile',
                             'autocast-fp16', 'autocast-bf16', 'train-seg',
                             'speed-layers', '--rounds', '1',
                             '--min-seconds', '0')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    checks = report['checks']
    fp16 = 'pass' if cpu_runs_fp16_autocast() else 'skip'
    assert {k: v['status'] for k, v in checks.items()} == {
        'compile': 'pass', 'autocast-fp16': fp16, 'autocast-bf16': 'pass',
        'train-seg': 'pass', 'speed-layers': 'info'}
    # WS's backward at the 4 weight shapes of the benchmark's 5 convs
    compiled = bounded(checks['compile']['values'])
    assert len(compiled) == 4
    assert all(0 < value <= tol for value, tol in compiled.values())
    # 3 shapes x (output, 3 gradients) x (finite, error within 2 eps)
    autocast = bounded(checks['autocast-bf16']['values'])
    assert len(autocast) == 24
    assert all(value <= tol for value, tol in autocast.values())

    train = checks['train-seg']['values']
    assert train['amp'] is False and train['loss_scaler'] is False
    assert math.isfinite(train['loss']) and train['loss'] > 0
    assert checks['train-seg']['summary'].endswith('float32 (--amp: CUDA '
                                                   'only)')

    # 5 conv shapes in training and inference; no peak memory on CPU
    rows = checks['speed-layers']['values']
    assert len(rows) == 10
    for label, row in rows.items():
        assert set(row) == {'mmcv ConvWS2d / conv time',
                            'ws_mm ConvWS2d / conv time', 'conv ms'}, label
        assert row['conv ms'] > 0
        for key in ('mmcv ConvWS2d / conv time', 'ws_mm ConvWS2d / conv time'):
            assert 0 < row[key]['min'] <= row[key]['median'] <= row[key]['max']
