"""BCN's passes over rows (ws_mm.functional.row_kernels): the C++ kernels and
torch's, each against a float64 computation from the definitions; and what
BatchChannelNorm does where the C++ kernels cannot be built."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from references import rounding_tol, rel_error
from ws_mm.functional import row_kernels

KINDS = {'cpp': row_kernels._compiled, 'torch': lambda: row_kernels.TorchKernels}


def random_rows(dtype, count=96, length=1000, seed=0):
    """Rows with their own offsets (up to 30 standard deviations) and
    spreads, a constant row, and a row of one value: what a moment or a sum
    computed naively would get wrong."""
    torch.manual_seed(seed)
    x = torch.randn(count, length, dtype=torch.float64)
    x = x * torch.rand(count, 1, dtype=torch.float64) * 3
    x = x + torch.randn(count, 1, dtype=torch.float64) * 30
    x[1] = 7.0
    return x.to(dtype)


def coefficients(count, dtype, n=4):
    torch.manual_seed(1)
    return [torch.randn(count, dtype=dtype) for _ in range(n)]


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32],
                         ids=['float64', 'float32'])
@pytest.mark.parametrize('kind', list(KINDS))
def test_the_passes_match_float64_definitions(kind, dtype):
    passes = KINDS[kind]()
    assert passes is not None, 'row_kernels.cpp did not build'
    x = random_rows(dtype)
    grad = torch.randn(x.shape, dtype=torch.float64).to(dtype)
    x64, grad64 = x.double(), grad.double()
    count, length = x.shape
    tol = rounding_tol(dtype, length)

    mean, var = passes.row_moments(x)
    assert mean.dtype == var.dtype == dtype and mean.shape == (count, )
    var64, mean64 = torch.var_mean(x64, dim=1, correction=0)
    assert rel_error(mean, mean64) < tol
    # per row: the deviations from the mean carry rounding of the size of
    # eps * |mean|, which the offsets make far larger than eps * std
    bound = tol * (var64 + mean64.abs() * var64.sqrt())
    assert ((var.double() - var64).abs() <= bound).all()
    assert var[1] == 0

    m = mean64.to(dtype)
    a, b, p, q = coefficients(count, dtype)
    centered = x64 - m.double()[:, None]
    assert rel_error(passes.row_affine(x, m, a, b),
                     a.double()[:, None] * centered + b.double()[:, None]) < tol
    sum_grad, sum_grad_x = passes.row_sums(grad, x, m)
    assert rel_error(sum_grad, grad64.sum(1)) < tol
    assert rel_error(sum_grad_x, (grad64 * centered).sum(1)) < tol
    expected = (a.double()[:, None] * grad64 + p.double()[:, None] * centered
                + q.double()[:, None])
    assert rel_error(passes.grad_rows(grad, x, m, a, p, q), expected) < tol


def test_the_cpp_passes_are_used_where_they_apply():
    rows = torch.zeros(4, 8)
    assert row_kernels.kernels(rows) is row_kernels._compiled()
    assert row_kernels.kernels(rows.half()) is row_kernels.TorchKernels
    assert row_kernels.kernels(rows.double()) is row_kernels._compiled()


def test_the_cpp_passes_reject_rows_they_cannot_read():
    passes = row_kernels._compiled()
    with pytest.raises(RuntimeError, match='contiguous 2-d float32/float64'):
        passes.row_moments(torch.zeros(4, 8).t())
    with pytest.raises(RuntimeError, match='does not match the rows'):
        passes.row_affine(torch.zeros(4, 8), torch.zeros(4),
                          torch.zeros(4).double(), torch.zeros(4))


def test_bcn_without_a_compiler_warns_and_computes_the_same(tmp_path):
    """With no C++ compiler (CXX names none) and an empty extension cache,
    the build fails: one warning says why and what it needs, and a fused
    BCN step gives what it gives with torch's kernels."""
    script = textwrap.dedent('''
        import warnings
        import torch
        import ws_mm.layers.batch_channel_norm as bcn_module
        from ws_mm.functional import row_kernels
        from ws_mm.layers import BatchChannelNorm
        bcn_module.FUSED_MIN_NUMEL = 0
        x = torch.randn(2, 8, 5, 5, requires_grad=True)
        def step():
            layer = BatchChannelNorm(8, 4)
            out = layer(x)
            return [out, *torch.autograd.grad(out.square().sum(), x)]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            first = step()
        assert row_kernels._compiled() is None
        row_kernels.USE_COMPILED = False
        again = step()
        assert all(torch.equal(a, b) for a, b in zip(first, again))
        print([str(w.message) for w in caught
               if 'did not build' in str(w.message)])
    ''')
    env = dict(os.environ, CXX=str(tmp_path / 'no-compiler'),
               TORCH_EXTENSIONS_DIR=str(tmp_path / 'extensions'))
    proc = subprocess.run([sys.executable, '-c', script], env=env, text=True,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (message, ) = eval(proc.stdout.strip().splitlines()[-1])
    assert 'runs on torch kernels' in message
    assert 'C++ compiler and ninja' in message
