"""BCN's kernels (ws_mm.functional.bcn_kernels): the C++ autograd function
against float64 computations from the definitions, on rows a naive
computation gets wrong; the rows' moments, C++ and torch's; where the C++
kernels apply; that a training step touches activations through them only;
and what BatchChannelNorm does where they cannot be built."""
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from references import rel_error, ref_bcn, ref_channel_stats, rounding_tol
from ws_mm.functional import bcn_kernels

KINDS = {'cpp': bcn_kernels._compiled,
         'torch': lambda: bcn_kernels.TorchKernels}
DTYPES = pytest.mark.parametrize('dtype', [torch.float64, torch.float32],
                                 ids=['float64', 'float32'])


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


# Row lengths: within one vector register, a 7x7 map (registers and one
# element left), and blocks of 256 elements with a remainder.
LENGTHS = pytest.mark.parametrize('length', [1, 7, 49, 1000])


@DTYPES
@LENGTHS
@pytest.mark.parametrize('kind', list(KINDS))
def test_row_moments_match_float64(kind, dtype, length):
    passes = KINDS[kind]()
    assert passes is not None, 'bcn_kernels.cpp did not build'
    x = random_rows(dtype, length=length)
    mean, var = passes.row_moments(x)
    assert mean.dtype == var.dtype == dtype and mean.shape == (len(x), )
    var64, mean64 = torch.var_mean(x.double(), dim=1, correction=0)
    tol = rounding_tol(dtype, x.size(1))
    assert rel_error(mean, mean64) < tol
    # per row: deviations carry rounding of the size of eps * |mean|, which
    # the offsets make far larger than eps * std
    bound = tol * (var64 + mean64.abs() * var64.sqrt())
    assert ((var.double() - var64).abs() <= bound).all()
    assert var[1] == 0


def bcn_case(dtype, n=3, c=32, groups=4, length=1000):
    """An (N, C, L) input of random_rows, parameters, and running
    statistics near the batch's."""
    x = random_rows(dtype, n * c, length).view(n, c, length)
    torch.manual_seed(2)
    params = [torch.rand(c) + 0.5, torch.randn(c),
              torch.rand(1, groups, 1) + 0.5, torch.randn(1, groups, 1)]
    mean, var = ref_channel_stats(x.double())
    given = (mean + torch.randn(c), var * (torch.rand(c) + 0.5))
    return x, [p.to(dtype) for p in params], [t.to(dtype) for t in given]


@DTYPES
@pytest.mark.parametrize('length', [49, 1000])
@pytest.mark.parametrize('channel', ['batch', 'given', 'moved', 'first'])
def test_the_cpp_function_matches_float64(channel, dtype, length):
    """Output, statistics, estimates and every gradient of the C++ autograd
    function against autograd through ref_bcn in float64. The channel
    statistics are the batch's (differentiated), given constants, or
    estimates updated in place first: moved toward the batch's mean and
    second moment around the given mean by a rate, or (the first update)
    replaced by the batch's mean and variance."""
    kernels = bcn_kernels._compiled()
    x, params, given = bcn_case(dtype, length=length)
    n, c, length = x.shape
    groups = params[2].numel()
    estimates = [t.clone() for t in given]
    rate = {'moved': 0.3}.get(channel)
    update = channel in ('moved', 'first')
    xg = x.clone().requires_grad_()
    pg = [p.clone().requires_grad_() for p in params]
    out, batch_mean, batch_var, kept = kernels.bcn(
        xg, *pg, *(estimates if channel != 'batch' else (None, None)), rate,
        update, channel == 'batch', 1e-5)

    x64 = x.double().requires_grad_()
    p64 = [p.double().requires_grad_() for p in params]
    b_mean, b_var = ref_channel_stats(x64)
    g_mean, g_var = (t.double() for t in given)
    ref_mean, ref_var = {
        'batch': (b_mean, b_var),
        'given': (g_mean, g_var),
        'moved': (g_mean + 0.3 * (b_mean.detach() - g_mean),
                  g_var + 0.3 * (b_var.detach() +
                                 (b_mean.detach() - g_mean)**2 - g_var)),
        'first': (b_mean.detach(), b_var.detach()),
    }[channel]
    ref = ref_bcn(x64, ref_mean, ref_var, *p64, groups)
    tol = rounding_tol(dtype, n * length)
    assert out.dtype == dtype and not out._is_view()
    assert rel_error(out, ref) < tol
    assert rel_error(batch_mean, b_mean) < tol
    assert rel_error(batch_var, b_var) < tol
    assert kept
    for estimate, old, expected in zip(estimates, given, (ref_mean, ref_var)):
        if update:
            assert rel_error(estimate, expected) < tol
        else:
            assert torch.equal(estimate, old)

    grad = torch.randn(x.shape, dtype=torch.float64)
    expected = torch.autograd.grad(ref, [x64, *p64], grad)
    got = torch.autograd.grad(out, [xg, *pg], grad.to(dtype),
                              retain_graph=True)
    for result, reference, p in zip(got, expected, [x, *params]):
        assert result.shape == p.shape and result.dtype == dtype
        assert rel_error(result, reference) < tol
    # without the input's gradient: the same for the parameters
    without = torch.autograd.grad(out, pg, grad.to(dtype))
    assert all(torch.equal(a, b) for a, b in zip(without, got[1:]))


def test_the_cpp_kernels_apply_on_cpu(monkeypatch):
    """To CPU tensors of any floating dtype (BCN's statistics are float32
    or float64), unless switched off."""
    compiled = bcn_kernels._compiled()
    for dtype in (torch.float32, torch.float64, torch.bfloat16,
                  torch.float16):
        assert bcn_kernels.compiled_for(torch.zeros(2, dtype=dtype)) \
            is compiled
    assert bcn_kernels.compiled_for(torch.zeros(2, dtype=torch.long)) is None
    monkeypatch.setattr(bcn_kernels, 'USE_COMPILED', False)
    assert bcn_kernels.compiled_for(torch.zeros(2)) is None


def test_the_cpp_kernels_reject_what_they_cannot_read():
    kernels = bcn_kernels._compiled()
    x, params, _ = bcn_case(torch.float32, n=2, c=8, groups=4, length=6)
    with pytest.raises(RuntimeError, match='contiguous float32/float64'):
        kernels.row_moments(torch.zeros(4, 8).t())
    with pytest.raises(RuntimeError, match='groups dividing C'):
        kernels.bcn(x, *params[:2], params[2][:, :3], params[3][:, :3], None,
                    None, None, False, True, 1e-5)
    with pytest.raises(RuntimeError, match='has 7 elements, expected 8'):
        kernels.bcn(x, params[0][:7], *params[1:], None, None, None, False,
                    True, 1e-5)
    with pytest.raises(RuntimeError, match='updating estimates takes them'):
        kernels.bcn(x, *params, None, None, 0.5, True, False, 1e-5)


@pytest.mark.parametrize('mode', ['estimate', 'batch'])
def test_a_training_step_reads_activations_only_in_the_kernels(mode):
    """BCN's training step on CPU (forward and backward) runs no torch
    kernel over activation-sized tensors: the C++ forward and backward read
    and write them, each group's block once from memory."""
    from torch.profiler import profile

    from ws_mm.layers import BatchChannelNorm
    bcn = BatchChannelNorm(8, 4, mode=mode).train()
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    bcn(x)  # the estimates' first update is another branch
    grad = torch.randn_like(x)
    # what only views, casts or allocates
    no_pass = ('aten::view', 'aten::reshape', 'aten::to', 'aten::detach',
               'aten::empty', 'aten::_reshape_alias', 'aten::as_strided',
               'aten::alias', 'aten::is_same_size')
    with profile(record_shapes=True) as prof:
        bcn(x).backward(grad)
    touching = sorted(
        e.name for e in prof.events()
        if e.name.startswith('aten::') and not e.name.startswith(no_pass)
        and any(math.prod(s) == x.numel() for s in e.input_shapes if s))
    assert touching == [], touching
    assert x.grad is not None and bcn.weight.grad is not None


def test_bcn_without_a_compiler_warns_and_computes_the_same(tmp_path):
    """With no C++ compiler (CXX names none) and an empty extension cache,
    the build fails: one warning says why and what it needs, and a fused
    BCN step gives what it gives with torch's kernels."""
    script = textwrap.dedent('''
        import warnings
        import torch
        import ws_mm.layers.batch_channel_norm as bcn_module
        from ws_mm.functional import bcn_kernels
        from ws_mm.layers import BatchChannelNorm
        bcn_module.FUSED = True
        x = torch.randn(2, 8, 5, 5, requires_grad=True)
        def step():
            layer = BatchChannelNorm(8, 4)
            out = layer(x)
            return [out, *torch.autograd.grad(out.square().sum(), x)]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            first = step()
        assert bcn_kernels._compiled() is None
        bcn_kernels.USE_COMPILED = False
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
    assert 'GCC or Clang and ninja' in message
