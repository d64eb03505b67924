"""Tests of Batch-Channel Normalization (ws_mm.layers.batch_channel_norm).

The expected values come from an independent float64 reference written
from the formulas of arXiv:1903.10520 (tests/references.py), not from the
code under test.
Exactness is checked in float64; float32 statistics of n values are allowed
the rounding of their sums, about eps * sqrt(n) * the sum of the magnitudes.
"""
import logging
import math
import warnings

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from ws_mm.functional.batch_channel_norm import (batch_channel_norm,
                                                 channel_stats,
                                                 group_norm_group_affine,
                                                 moving_average_rate)
import ws_mm.layers.batch_channel_norm as bcn_module
from ws_mm.functional import bcn_kernels
from ws_mm.layers.batch_channel_norm import (BatchChannelNorm,
                                             EstimatedBatchNorm)
from references import RefBCN, ref_bcn, ref_channel_stats, rounding_tol

EPS = 1e-5
EPS32 = torch.finfo(torch.float32).eps


@pytest.fixture(autouse=True, params=['fused', 'fused-torch', 'two-stage'])
def path(request, monkeypatch):
    """Every test runs each way a BCN computes: as one normalization, with
    its C++ kernels (as the layer does on CPU) and with torch's kernels, and
    as its two stages."""
    monkeypatch.setattr(bcn_module, 'FUSED', {
        'fused': None, 'fused-torch': True, 'two-stage': False
    }[request.param])
    monkeypatch.setattr(bcn_kernels, 'USE_COMPILED',
                        request.param == 'fused')
    return request.param


def make_bcn(num_features=8, num_groups=4, mode='estimate', seed=0, **kwargs):
    """A float64 BCN with random non-trivial affine parameters."""
    torch.manual_seed(seed)
    bcn = BatchChannelNorm(num_features, num_groups, mode=mode,
                           **kwargs).double()
    with torch.no_grad():
        for name, p in bcn.named_parameters():
            offset = 1.0 if name.endswith('weight') else 0.0
            p.copy_(torch.randn_like(p) * 0.5 + offset)
    return bcn


def randn(*shape, mean=0.0, std=1.0, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * std + mean


def set_estimates(bcn, seed=2, tracked=5):
    """Random non-trivial running estimates, already past the warm-up."""
    g = torch.Generator().manual_seed(seed)
    c = bcn.num_features
    with torch.no_grad():
        bcn.pbn.running_mean.copy_(torch.randn(c, generator=g,
                                               dtype=torch.float64))
        bcn.pbn.running_var.copy_(torch.rand(c, generator=g,
                                             dtype=torch.float64) + 0.5)
        bcn.pbn.num_batches_tracked.fill_(tracked)


SHAPES = [(4, 8), (3, 8, 7), (2, 8, 5, 6), (2, 8, 3, 4, 5)]


# ---------------------------------------------------- against the reference
@pytest.mark.parametrize('shape', SHAPES, ids=lambda s: f'rank{len(s)}')
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('mode', ['estimate', 'batch'])
def test_matches_float64_reference(mode, training, shape):
    bcn = make_bcn(mode=mode)
    set_estimates(bcn)
    old_mean = bcn.pbn.running_mean.clone()
    old_var = bcn.pbn.running_var.clone()
    x = randn(*shape, mean=1.5, std=2.0)
    bcn.train(training)

    out = bcn(x)

    batch_mean, batch_var = ref_channel_stats(x)
    if not training:
        mean, var = old_mean, old_var
    elif mode == 'batch':
        mean, var = batch_mean, batch_var
    else:  # update number 6 with momentum 0.1: rate max(0.1, 1/6) = 1/6;
        # the batch's second moment is taken around the old estimate
        shape_c = [1, x.size(1)] + [1] * (x.dim() - 2)
        dims = [0, *range(2, x.dim())]
        second_moment = ((x - old_mean.view(shape_c))**2).mean(dims)
        mean = old_mean * 5 / 6 + batch_mean / 6
        var = old_var * 5 / 6 + second_moment / 6
    pbn = bcn.pbn
    expected = ref_bcn(x, mean, var, pbn.weight, pbn.bias, bcn.weight,
                       bcn.bias, bcn.num_groups)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    if mode == 'estimate':
        torch.testing.assert_close(pbn.running_mean, mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(pbn.running_var, var, rtol=0, atol=1e-12)


@pytest.mark.parametrize('momentum', [0.3, None], ids=['ema', 'cumulative'])
@pytest.mark.parametrize('shape', SHAPES, ids=lambda s: f'rank{len(s)}')
@pytest.mark.parametrize('mode', ['estimate', 'batch'])
def test_steps_match_the_two_stage_reference(mode, shape, momentum):
    """Four training steps (rates 1, 1/2, 1/3, then 0.3 or 1/4) and an
    eval step, each against the official two-stage arithmetic in float64:
    the output, the gradients w.r.t. the input and both affines, and the
    running statistics after the step."""
    bcn = make_bcn(mode=mode, momentum=momentum)
    ref = RefBCN(bcn)
    for step, training in enumerate([True] * 4 + [False]):
        bcn.train(training)
        x = randn(shape[0] + step % 2, *shape[1:], mean=1.5 - step,
                  std=2.0 + step, seed=10 + step).requires_grad_()
        x_ref = x.detach().clone().requires_grad_()
        upstream = randn(*x.shape, seed=20 + step)

        out, expected = bcn(x), ref(x_ref, training)
        out.backward(upstream)
        expected.backward(upstream)

        tol = dict(rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(out, expected, **tol)
        torch.testing.assert_close(x.grad, x_ref.grad, **tol)
        for name, param in bcn.named_parameters():
            torch.testing.assert_close(param.grad, ref.params[name].grad,
                                       **tol, msg=name)
            param.grad, ref.params[name].grad = None, None
        for name, value in ref.state.items():
            torch.testing.assert_close(getattr(bcn.pbn, name), value,
                                       rtol=0, atol=1e-12, msg=name)


@pytest.mark.parametrize('channel', [True, False], ids=['estimates', 'batch'])
def test_gradcheck_of_the_fused_function(channel):
    """The fused function alone, with the channel stage's statistics given
    (estimate mode, in training too) or the batch's own; first and second
    derivatives."""
    torch.manual_seed(0)
    x = randn(3, 4, 2, 3, mean=0.5).requires_grad_()
    params = [torch.randn(4, dtype=torch.float64) * 0.5 + 1,
              torch.randn(4, dtype=torch.float64),
              torch.randn(1, 2, 1, dtype=torch.float64) * 0.5 + 1,
              torch.randn(1, 2, 1, dtype=torch.float64)]
    params = [p.requires_grad_() for p in params]
    stats = (torch.randn(4, dtype=torch.float64),
             torch.rand(4, dtype=torch.float64) + 0.5) if channel else None

    def f(x, *params):
        return batch_channel_norm(x, *params, eps=EPS, channel=stats)

    assert torch.autograd.gradcheck(f, (x, *params))
    assert torch.autograd.gradgradcheck(f, (x, *params))


def test_functional_pieces_match_reference():
    x = randn(3, 12, 4, 5, mean=-2.0, std=3.0)
    mean, var = channel_stats(x)
    ref_mean, ref_var = ref_channel_stats(x)
    torch.testing.assert_close(mean, ref_mean)
    torch.testing.assert_close(var, ref_var)

    gw, gb = randn(1, 3, 1, seed=3), randn(1, 3, 1, seed=4)
    out = group_norm_group_affine(x, 3, gw, gb, EPS)
    g = x.reshape(3, 3, -1)
    m = g.mean(-1, keepdim=True)
    v = ((g - m) ** 2).mean(-1, keepdim=True)
    expected = ((g - m) / torch.sqrt(v + EPS) * gw + gb).reshape(x.shape)
    torch.testing.assert_close(out, expected)


def test_channel_stats_of_low_precision_input_are_float32():
    x = randn(4, 3, 8, 8, mean=100.0, std=0.5).to(torch.bfloat16)
    mean, var = channel_stats(x)
    assert mean.dtype == var.dtype == torch.float32
    ref_mean, ref_var = ref_channel_stats(x.double())
    # float32 sums of n values ~100: the mean is off by about eps * sqrt(n)
    # relative; the variance, a mean of (x - mean)^2 with (x - mean) off by
    # eps * |x|, by about eps * sqrt(n) + 2 eps |x| / std relative. In bf16
    # (eps 2^-7) both would be hundreds of times further off.
    n = x.numel() // x.shape[1]
    xs = x.double().transpose(0, 1).flatten(1)
    rel_mean = rounding_tol(torch.float32, n)
    rel_var = rel_mean + 4 * EPS32 * (xs.abs().max(1).values /
                                      ref_var.sqrt()).max().item()
    torch.testing.assert_close(mean.double(), ref_mean, rtol=rel_mean,
                               atol=0)
    torch.testing.assert_close(var.double(), ref_var, rtol=rel_var, atol=0)


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize('mode,training', [('estimate', False),
                                           ('batch', True),
                                           ('batch', False)])
def test_gradcheck(mode, training):
    # Estimate mode is checked in eval: in training each call also moves the
    # estimates (no-grad by design), so finite differences would see them.
    bcn = make_bcn(num_features=4, num_groups=2, mode=mode)
    set_estimates(bcn)
    bcn.train(training)
    names = [name for name, _ in bcn.named_parameters()]
    assert sorted(names) == ['bias', 'pbn.bias', 'pbn.weight', 'weight']
    params = [p.detach().clone().requires_grad_() for p in bcn.parameters()]
    x = randn(3, 4, 2, 3).requires_grad_()

    def f(x, *params):
        return functional_call(bcn, dict(zip(names, params)), (x, ))

    assert torch.autograd.gradcheck(f, (x, *params))


def test_gradients_reach_group_affine_as_per_group_sums():
    x = randn(2, 6, 5)
    gw = randn(1, 3, 1, seed=5).requires_grad_()
    gb = randn(1, 3, 1, seed=6).requires_grad_()
    out = group_norm_group_affine(x, 3, gw, gb, EPS)
    upstream = randn(*out.shape, seed=7)
    out.backward(upstream)
    g = x.reshape(2, 3, -1)
    x_hat = (g - g.mean(-1, keepdim=True)) / torch.sqrt(
        g.var(-1, unbiased=False, keepdim=True) + EPS)
    up = upstream.reshape(2, 3, -1)
    torch.testing.assert_close(gw.grad, (up * x_hat).sum((0, 2), keepdim=True))
    torch.testing.assert_close(gb.grad, up.sum((0, 2), keepdim=True))


# -------------------------------------------------------------- estimate mode
def test_first_training_batch_is_normalized_by_its_own_statistics():
    bcn = BatchChannelNorm(8, num_groups=4).double()
    x = randn(2, 8, 6, 6, mean=3.0, std=2.0)
    y = bcn.pbn(x)  # fresh: would be x / sqrt(1 + eps) with mean 0 / var 1
    mean, var = ref_channel_stats(y)
    torch.testing.assert_close(mean, torch.zeros(8, dtype=torch.float64),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(var, torch.ones(8, dtype=torch.float64),
                               rtol=0, atol=1e-4)
    ref_mean, ref_var = ref_channel_stats(x)
    torch.testing.assert_close(bcn.pbn.running_mean, ref_mean, rtol=0,
                               atol=1e-12)
    torch.testing.assert_close(bcn.pbn.running_var, ref_var, rtol=0,
                               atol=1e-12)
    assert bcn.pbn.num_batches_tracked.item() == 1


def test_estimates_move_in_training_only():
    bcn = BatchChannelNorm(8, num_groups=4)
    x = torch.randn(2, 8, 5, 5) * 2 + 1
    bcn.train()
    bcn(x)
    before = {k: v.clone() for k, v in bcn.state_dict().items()}

    bcn.eval()
    bcn(torch.randn(3, 8, 5, 5) * 5 - 3)
    for k, v in bcn.state_dict().items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k]), k

    bcn.train()
    bcn(torch.randn(3, 8, 5, 5) * 5 - 3)
    assert not torch.equal(bcn.pbn.running_mean, before['pbn.running_mean'])
    assert not torch.equal(bcn.pbn.running_var, before['pbn.running_var'])
    assert bcn.pbn.num_batches_tracked.item() == 2


def test_moving_average_rate_schedule():
    assert [moving_average_rate(0.3, t) for t in range(6)] == [
        1.0, 0.5, 1 / 3, 0.3, 0.3, 0.3]
    assert moving_average_rate(0.1, 8) == pytest.approx(1 / 9)
    assert moving_average_rate(0.1, 9) == pytest.approx(0.1)
    rate = moving_average_rate(0.3, torch.tensor(1))
    assert isinstance(rate, torch.Tensor) and rate.item() == 0.5
    assert moving_average_rate(0.3, torch.tensor(7)).item() == \
        pytest.approx(0.3)
    # momentum=None: the cumulative average, as BatchNorm's
    assert moving_average_rate(None, 99) == pytest.approx(0.01)
    assert moving_average_rate(None, torch.tensor(99.)).item() == \
        pytest.approx(0.01)


def test_update_rule_cumulative_then_ema_by_hand():
    """Rates 1, 1/2, 1/3 then momentum; the variance of each batch is its
    second moment around the estimate before the update (official code),
    except the first batch's, which has no estimate to refer to."""
    ebn = EstimatedBatchNorm(3, momentum=0.3).double()
    batches = [randn(2 + i, 3, 4, mean=float(i), std=1.0 + i, seed=10 + i)
               for i in range(4)]
    ebn.train()
    exp_mean = exp_var = None
    for i, b in enumerate(batches):
        mean, var = ref_channel_stats(b)
        rate = max(0.3, 1 / (i + 1))
        if exp_mean is None:
            exp_mean, exp_var = mean, var
        else:
            second_moment = ((b - exp_mean.view(1, 3, 1))**2).mean((0, 2))
            exp_mean = (1 - rate) * exp_mean + rate * mean
            exp_var = (1 - rate) * exp_var + rate * second_moment
        ebn(b)
        torch.testing.assert_close(ebn.running_mean, exp_mean, rtol=0,
                                   atol=1e-12)
        torch.testing.assert_close(ebn.running_var, exp_var, rtol=0,
                                   atol=1e-12)
    assert ebn.num_batches_tracked.item() == 4


def test_one_value_per_channel_keeps_a_positive_variance():
    """Micro-batches of one image with 1x1 maps (ASPP's image pooling):
    the batch variance is 0, the estimate must not collapse to 0."""
    ebn = EstimatedBatchNorm(4).double().train()
    for seed in range(20):
        ebn(randn(1, 4, 1, 1, seed=seed))
    assert (ebn.running_var > 0.3).all(), ebn.running_var


def test_no_gradient_through_estimates():
    bcn = make_bcn(mode='estimate')
    set_estimates(bcn)
    x = randn(2, 8, 4, 4, mean=1.0, std=2.0)
    upstream = randn(2, 8, 4, 4, seed=9)

    bcn.train()
    x_train = x.clone().requires_grad_()
    y_train = bcn(x_train)
    y_train.backward(upstream)

    # eval with the (now updated) estimates: the estimates are constants, so
    # the gradient must be the same as in training.
    bcn.eval()
    x_eval = x.clone().requires_grad_()
    y_eval = bcn(x_eval)
    y_eval.backward(upstream)

    torch.testing.assert_close(y_train, y_eval, rtol=0, atol=0)
    torch.testing.assert_close(x_train.grad, x_eval.grad, rtol=0, atol=0)
    for name, buf in bcn.named_buffers():
        assert not buf.requires_grad and buf.grad is None, name


def test_the_output_is_not_a_view():
    """So an in-place op after BCN (a ReLU) takes over the output's own
    gradient function: on a view, autograd would copy the whole gradient
    in the backward (CopySlices)."""
    bcn = make_bcn()
    x = randn(2, 8, 4, 4).requires_grad_()
    for training in (True, False):
        y = bcn.train(training)(x)
        assert not y._is_view()
        torch.relu_(y).sum().backward()
        assert type(y.grad_fn).__name__.startswith(('Relu', 'Threshold'))


def test_called_twice_before_backward():
    # A shared head calls the layer once per level before one backward; the
    # second update of the estimates must not break the first graph.
    bcn = BatchChannelNorm(8, num_groups=4).train()
    xs = [torch.randn(2, 8, s, s, requires_grad=True) for s in (6, 3)]
    sum(bcn(x).square().sum() for x in xs).backward()
    assert all(torch.isfinite(x.grad).all() for x in xs)
    assert bcn.pbn.num_batches_tracked.item() == 2


# -------------------------------------------------------- non-finite batches
@pytest.fixture
def ws_mm_messages():
    """The messages of the ``ws_mm`` logger during the test."""
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger('ws_mm')
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


def nonfinite(value, seed=20):
    x = randn(2, 8, 4, 4, seed=seed)
    x[1, 5, 2, 3] = value
    return x


@pytest.mark.parametrize('value', [math.nan, math.inf, -math.inf])
def test_a_nonfinite_batch_leaves_the_estimates_unchanged(value,
                                                           ws_mm_messages):
    model = nn.Sequential(nn.Identity(), make_bcn()).train()
    bcn = model[1]
    set_estimates(bcn)
    before = {k: v.clone() for k, v in bcn.pbn.state_dict().items()}

    for count in (1, 2):
        x = nonfinite(value, seed=20 + count)
        out = model(x)
        for key in ('running_mean', 'running_var', 'num_batches_tracked'):
            assert torch.equal(getattr(bcn.pbn, key), before[key]), key
        assert bcn.pbn.num_nonfinite_batches.item() == count
        # normalized with the estimates unchanged: not finite in the bad
        # value's sample and group only
        with torch.no_grad():
            ref = ref_bcn(x, before['running_mean'], before['running_var'],
                          bcn.pbn.weight, bcn.pbn.bias, bcn.weight, bcn.bias,
                          bcn.num_groups)
        assert ref.isfinite().sum() == ref.numel() - ref[1, 4:6].numel()
        torch.testing.assert_close(out, ref, equal_nan=True)
    assert len(ws_mm_messages) == 1 and ws_mm_messages[0].startswith(
        'ws_mm: EstimatedBatchNorm(8, eps=1e-05, momentum=0.1, affine=True) '
        'got a training batch whose statistics are not finite')

    # The next finite batch is update number 6, as if the others never came.
    x = randn(2, 8, 4, 4, mean=1.0, seed=30)
    model(x)
    mean, _ = ref_channel_stats(x)
    second_moment = ((x - before['running_mean'].view(1, 8, 1, 1))**2).mean(
        (0, 2, 3))
    torch.testing.assert_close(
        bcn.pbn.running_mean, before['running_mean'] * 5 / 6 + mean / 6,
        rtol=0, atol=1e-12)
    torch.testing.assert_close(
        bcn.pbn.running_var, before['running_var'] * 5 / 6 + second_moment / 6,
        rtol=0, atol=1e-12)
    assert torch.isfinite(model.eval()(x)).all()


def test_a_nonfinite_first_batch_is_skipped_and_the_next_copied(
        ws_mm_messages):
    ebn = EstimatedBatchNorm(8).double().train()
    ebn(nonfinite(math.nan))
    assert ebn.num_batches_tracked.item() == 0
    assert ebn.num_nonfinite_batches.item() == 1
    assert ws_mm_messages[0].startswith(
        'ws_mm: EstimatedBatchNorm(8, eps=1e-05, momentum=0.1, affine=True) '
        'got a training batch')
    x = randn(3, 8, 5, seed=31)
    ebn(x)
    mean, var = ref_channel_stats(x)
    torch.testing.assert_close(ebn.running_mean, mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(ebn.running_var, var, rtol=0, atol=1e-12)


def test_resume_keeps_the_count(tmp_path, ws_mm_messages):
    bcn = BatchChannelNorm(8, num_groups=4).train()
    bcn(torch.randn(2, 8, 3, 3))
    bcn(nonfinite(math.nan).float())
    torch.save(bcn.state_dict(), tmp_path / 'bcn.pth')

    resumed = BatchChannelNorm(8, num_groups=4).train()
    resumed.load_state_dict(torch.load(tmp_path / 'bcn.pth'))
    assert resumed.pbn.num_nonfinite_batches.item() == 1
    resumed(nonfinite(math.inf).float())
    assert resumed.pbn.num_nonfinite_batches.item() == 2
    assert resumed.pbn.num_batches_tracked.item() == 1


@pytest.mark.parametrize('source', ['before_the_count', 'batch_mode'])
def test_checkpoints_without_the_count_load_strictly(source):
    """Official BCN checkpoints and those saved before the count have no
    num_nonfinite_batches, nor has a mode='batch' BCN (a large-batch phase
    that micro-batch training continues in estimate mode): none counted."""
    if source == 'batch_mode':
        old = BatchChannelNorm(8, num_groups=4, mode='batch').state_dict()
    else:
        old = BatchChannelNorm(8, num_groups=4).state_dict()
        del old['pbn.num_nonfinite_batches']
    bcn = BatchChannelNorm(8, num_groups=4)
    bcn.pbn.num_nonfinite_batches.fill_(3)
    bcn.load_state_dict(old)  # strict
    assert bcn.pbn.num_nonfinite_batches.item() == 0

    # mmengine's loader (strict=False) reports missing keys: none here.
    from mmengine.runner.checkpoint import load_state_dict
    reports = []
    report = logging.getLogger('test_report')
    report.addHandler(logging.Handler())
    report.handlers[-1].emit = lambda record: reports.append(
        record.getMessage())
    load_state_dict(bcn, old, logger=report)
    assert reports == []


@pytest.mark.e2e
@pytest.mark.dist
def test_two_ranks_skip_a_nonfinite_batch_of_either_rank(two_ranks):
    ranks = two_ranks('bcn_nonfinite')
    for steps in zip(*(r['steps'] for r in ranks)):
        for key in ('running_mean', 'running_var', 'num_batches_tracked',
                    'num_nonfinite_batches'):
            assert torch.equal(steps[0][key], steps[1][key]), key
    # Step 1 is NaN on rank 1, step 2 Inf on rank 0: both ranks skip both.
    steps = ranks[0]['steps']
    for i, skipped in ((1, 1), (2, 2)):
        for key in ('running_mean', 'running_var', 'num_batches_tracked'):
            assert torch.equal(steps[i][key], steps[0][key]), (i, key)
        assert steps[i]['num_nonfinite_batches'].item() == skipped
    assert steps[3]['num_batches_tracked'].item() == 2
    assert torch.isfinite(steps[3]['running_var']).all()
    assert not torch.equal(steps[3]['running_mean'], steps[0]['running_mean'])
    # The decision needs no collective of its own.
    assert [s['reduces'] for s in steps] == [1, 1, 1, 1]
    for rank in ranks:
        assert len(rank['messages']) == 1
        assert rank['messages'][0].startswith(
            'ws_mm: EstimatedBatchNorm(8, eps=1e-05, momentum=0.1, '
            'affine=True) got a training')


# ------------------------------------------------------------------ batch mode
def _record_warnings(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        fn()
    return [w for w in caught if issubclass(w.category, UserWarning)]


def test_batch_mode_warns_once_when_pbn_frozen():
    bcn = BatchChannelNorm(8, num_groups=4, mode='batch').train()
    x = torch.randn(2, 8, 4, 4)
    assert _record_warnings(lambda: bcn(x)) == []

    bcn.pbn.eval()  # what mmdet's ResNet does with norm_eval=True
    with pytest.warns(UserWarning, match='norm_eval=False') as caught:
        bcn(x)
    message = str(caught[0].message)
    assert len(caught) == 1 and 'BatchChannelNorm' in message
    assert 'FreezeNormStatisticsHook' in message  # the other, deliberate cause
    assert _record_warnings(lambda: bcn(x)) == []  # once per instance

    other = BatchChannelNorm(8, num_groups=4, mode='batch').eval()
    assert _record_warnings(lambda: other(x)) == []  # eval as a whole: fine


def test_norm_eval_freezes_batch_mode_only():
    est = BatchChannelNorm(8, num_groups=4, mode='estimate').train()
    bat = BatchChannelNorm(8, num_groups=4, mode='batch').train()
    for model in (est, bat):  # mmdet ResNet.train() with norm_eval=True
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.eval()
    assert est.pbn.training and not bat.pbn.training
    x = torch.randn(2, 8, 4, 4)
    assert _record_warnings(lambda: est(x)) == []
    assert est.pbn.num_batches_tracked.item() == 1


@pytest.mark.parametrize('mode', ['estimate', 'batch'])
def test_a_frozen_stage_normalizes_with_its_statistics(mode):
    """pbn in eval mode while the BCN trains (norm_eval,
    FreezeNormStatisticsHook): its statistics are used as they are and
    stay; gradients still reach every affine."""
    bcn = make_bcn(mode=mode).train()
    set_estimates(bcn)
    bcn.pbn.eval()
    before = {k: v.clone() for k, v in bcn.pbn.state_dict().items()}
    x = randn(3, 8, 4, 4, mean=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # batch mode warns that it is frozen
        out = bcn(x)
    pbn = bcn.pbn
    expected = ref_bcn(x, before['running_mean'], before['running_var'],
                       pbn.weight, pbn.bias, bcn.weight, bcn.bias, 4)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    for key, value in pbn.state_dict().items():
        assert torch.equal(value, before[key]), key
    out.square().sum().backward()
    assert all(p.grad.abs().sum() > 0 for p in bcn.parameters())


@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
def test_a_stage_converted_to_a_torch_batchnorm(training):
    """mmengine converts BN stages (SyncBatchNorm to _BatchNormXd on CPU):
    a torch BatchNorm2d as pbn computes what ours does."""
    results = []
    for convert in (False, True):
        bcn = make_bcn(mode='batch').train(training)
        set_estimates(bcn)
        if convert:
            bn = nn.BatchNorm2d(8, momentum=None).double().train(training)
            bn.load_state_dict(bcn.pbn.state_dict())
            bcn.pbn = bn
        else:
            bcn.pbn.momentum = None
        x = randn(3, 8, 4, 4, mean=1.0).requires_grad_()
        out = bcn(x)
        out.backward(randn(*out.shape, seed=4))
        results.append((out, x.grad, *bcn.pbn.state_dict().values(),
                        *(p.grad for p in bcn.parameters())))
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize('mode', ['estimate', 'batch'])
def test_channels_last_input(mode):
    """A non-contiguous input gives what its contiguous copy gives."""
    x = randn(2, 8, 5, 6, mean=1.0).to(memory_format=torch.channels_last)
    results = []
    for data in (x, x.contiguous()):
        bcn = make_bcn(mode=mode).train()
        data = data.clone().requires_grad_()
        out = bcn(data)
        out.backward(randn(*out.shape, seed=3))
        results.append((out, data.grad, bcn.pbn.running_mean,
                        *(p.grad for p in bcn.parameters())))
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_sync_bn_and_conversion():
    bcn = BatchChannelNorm(8, num_groups=4, mode='batch', sync_bn=True)
    assert type(bcn.pbn) is nn.SyncBatchNorm
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(
        nn.Sequential(BatchChannelNorm(8, num_groups=4, mode='batch'),
                      BatchChannelNorm(8, num_groups=4, mode='estimate')))
    assert type(converted[0].pbn) is nn.SyncBatchNorm
    assert type(converted[1].pbn) is EstimatedBatchNorm


# ------------------------------------------------ zero_init_residual
@pytest.mark.parametrize('mode', BatchChannelNorm.MODES)
def test_init_weights_revives_a_layer_zeroed_whole(mode):
    """Both affines at zero: the output is zero and stays so, only the
    per-channel affine goes back to 1 / 0. Any other state is left alone."""
    bcn = BatchChannelNorm(8, num_groups=4, mode=mode).double()
    x = torch.randn(3, 8, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        for p in bcn.parameters():
            p.zero_()
    bcn.init_weights()
    assert torch.equal(bcn.pbn.weight, torch.ones(8, dtype=torch.float64))
    assert not bcn.pbn.bias.any() and not bcn.weight.any()
    assert not bcn.eval()(x).any()

    with torch.no_grad():
        bcn.weight.fill_(0.5)
        bcn.pbn.weight.zero_()
    state = {k: v.clone() for k, v in bcn.state_dict().items()}
    bcn.init_weights()
    assert all(torch.equal(v, state[k]) for k, v in bcn.state_dict().items())


@pytest.mark.parametrize('scope, depth', [('mmseg', 18), ('mmdet', 50)])
def test_resnets_from_scratch_learn_every_residual_branch(scope, depth):
    """mmseg's and mmdet's ResNets, built without weights, zero each block's
    last norm (zero_init_residual). With BCN there, the group affine starts
    at zero and gets a gradient; without init_weights' revival neither
    affine ever would."""
    if scope == 'mmseg':
        from mmseg.models.backbones import ResNetV1c as ResNet
    else:
        from mmdet.models.backbones import ResNet
    torch.manual_seed(0)
    net = ResNet(depth=depth, norm_cfg=dict(type='BCN', num_groups=32))
    net.init_weights()
    last = [block.norm3 if depth >= 50 else block.norm2
            for layer in (net.layer1, net.layer2, net.layer3, net.layer4)
            for block in layer]
    for norm in last:
        assert isinstance(norm, BatchChannelNorm)
        assert not norm.weight.any() and not norm.bias.any()
        assert (norm.pbn.weight == 1).all() and not norm.pbn.bias.any()
    net.train()
    sum(out.sum() for out in net(torch.randn(2, 3, 64, 64))).backward()
    assert all(norm.weight.grad.abs().sum() > 0 for norm in last)


# ------------------------------------------------------- layout and repr
def test_checkpoint_layout_and_repr():
    bcn = BatchChannelNorm(64)
    shapes = {k: tuple(v.shape) for k, v in bcn.state_dict().items()}
    assert shapes == {
        'weight': (1, 32, 1), 'bias': (1, 32, 1),
        'pbn.weight': (64, ), 'pbn.bias': (64, ),
        'pbn.running_mean': (64, ), 'pbn.running_var': (64, ),
        'pbn.num_batches_tracked': (), 'pbn.num_nonfinite_batches': ()
    }
    assert torch.equal(bcn.weight, torch.ones(1, 32, 1))
    assert torch.equal(bcn.bias, torch.zeros(1, 32, 1))
    assert BatchChannelNorm._abbr_ == 'bcn'
    assert not isinstance(bcn.pbn, _BatchNorm)
    text = repr(BatchChannelNorm(48, num_groups=16, mode='batch', eps=1e-3))
    for part in ('48', 'num_groups=16', "mode='batch'", 'eps=0.001'):
        assert part in text


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize('kwargs,error,match', [
    (dict(num_features=48.0), TypeError, r'BatchChannelNorm.*num_features'),
    (dict(num_features=0), ValueError,
     r'BatchChannelNorm.*num_features must be a positive int'),
    (dict(num_features=64, num_groups=True), TypeError,
     r'BatchChannelNorm.*num_groups'),
    (dict(num_features=48), ValueError,
     r'BatchChannelNorm: num_groups=32 does not divide num_features=48; '
     r'use one of \[1, 2, 3, 4, 6, 8, 12, 16, 24, 48\]'),
    (dict(num_features=64, mode='sync'), ValueError,
     r"BatchChannelNorm.*'sync'.*\['estimate', 'batch'\]"),
    (dict(num_features=64, eps=-1e-5), ValueError, r'BatchChannelNorm.*eps'),
    (dict(num_features=64, momentum=0.0), ValueError,
     r'BatchChannelNorm.*momentum must be in \(0, 1\]'),
    (dict(num_features=64, momentum=1.5), ValueError,
     r'BatchChannelNorm.*momentum'),
    (dict(num_features=64, sync_bn=True), ValueError,
     r'BatchChannelNorm.*sync_bn.*mode="batch"'),
])
def test_bad_config(kwargs, error, match):
    with pytest.raises(error, match=match):
        BatchChannelNorm(**kwargs)


@pytest.mark.parametrize('shape', [(8, ), (2, 16, 4, 4)])
def test_bad_input_shape(shape):
    bcn = BatchChannelNorm(8, num_groups=4)
    message = (r'BatchChannelNorm expected an input of shape \(N, 8, \*\), '
               r'got shape ' + str(shape).replace('(', r'\(').replace(
                   ')', r'\)'))
    with pytest.raises(ValueError, match=message):
        bcn(torch.randn(*shape))


# ---------------------------------------------------------------- two ranks
@pytest.mark.e2e
@pytest.mark.dist
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32],
                         ids=['float64', 'float32'])
def test_two_ranks_share_global_estimates(two_ranks, dtype, path):
    """Each step of each rank against the two-stage reference with the
    estimates of both ranks' data together, and one collective per step."""
    results = two_ranks('bcn_one_step', str(dtype).split('.')[1], path)
    torch.manual_seed(0)  # the script's initialization
    refs = [RefBCN(BatchChannelNorm(8, num_groups=4)) for _ in results]
    for step, ranks in enumerate(zip(*results)):
        assert [r['all_reduce_calls'] for r in ranks] == [1, 1]
        assert ranks[0]['running_mean'].dtype == dtype
        for key in ('running_mean', 'running_var', 'num_batches_tracked'):
            assert torch.equal(ranks[0][key], ranks[1][key]), key
        data = [r['x'].double() for r in ranks]
        assert data[0].shape[0] != data[1].shape[0]
        for r, ref in zip(ranks, refs):
            x = r['x'].double().requires_grad_()
            expected = ref(x, True, stats_of=torch.cat(data))
            expected.backward(r['upstream'].double())
            if dtype == torch.float64:
                tol = dict(rtol=1e-10, atol=1e-10)
                torch.testing.assert_close(r['out'], expected, **tol)
                torch.testing.assert_close(r['x_grad'], x.grad, **tol)
                for name, grad in r['grads'].items():
                    torch.testing.assert_close(
                        grad, ref.params[name].grad, **tol, msg=name)
                    ref.params[name].grad = None
                for key in ('running_mean', 'running_var'):
                    torch.testing.assert_close(r[key], ref.state[key],
                                               rtol=0, atol=1e-12)
            else:
                _check_float32_estimates(r, ref, data)
        # Not what an unweighted average of the ranks' statistics would give.
        naive_mean = sum(ref_channel_stats(d)[0] for d in data) / 2
        if step == 0:
            got = ranks[0]['running_mean'].double()
            assert (got - naive_mean).abs().max() > 0.1


def _check_float32_estimates(result, ref, data):
    """Each rank sums its n values per channel in float32: its mean is off by
    about eps * sqrt(n) * mean(|x|), its var and its mean^2 (combined across
    ranks in float64) by about eps * sqrt(n) * mean(x^2) each, the latter
    twice; an update moves each estimate by at most that."""
    per_rank = [d.transpose(0, 1).flatten(1) for d in data]
    m1 = torch.stack([r.abs().mean(1) for r in per_rank]).max()
    m2 = torch.stack([r.square().mean(1) for r in per_rank]).max()
    rounding = rounding_tol(torch.float32, max(r.shape[1] for r in per_rank))
    steps = result['num_batches_tracked'].item()
    torch.testing.assert_close(result['running_mean'].double(),
                               ref.state['running_mean'], rtol=0,
                               atol=steps * rounding * m1.item())
    torch.testing.assert_close(result['running_var'].double(),
                               ref.state['running_var'], rtol=0,
                               atol=3 * steps * rounding * m2.item())


# ------------------------------------------------------------------- autocast
@pytest.mark.parametrize('mode', ['estimate', 'batch'])
def test_autocast_bfloat16_cpu(mode):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 16, 3, padding=1)
    bcn = BatchChannelNorm(16, num_groups=4, mode=mode).train()
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    inputs = []
    bcn.register_forward_pre_hook(lambda m, a: inputs.append(a[0].detach()))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = bcn(conv(x) * 50 + 20)
    assert torch.isfinite(out).all()
    out.float().square().mean().backward()
    for name, t in [('x', x), *conv.named_parameters(),
                    *bcn.named_parameters()]:
        assert t.grad is not None and torch.isfinite(t.grad).all(), name
    assert bcn.pbn.running_mean.dtype == torch.float32
    assert torch.isfinite(bcn.pbn.running_var).all()

    # The statistics of the bfloat16 input are computed in float32: against
    # float64 ones of the same values they are off by the rounding of sums
    # of n terms in float32 (the second moment: of positive terms, so
    # relative to it). Computed in bfloat16, or rounded to it, they would
    # be off by ~eps_bf16 = 2**-8 relative, some 500 times more.
    (inp, ) = inputs
    assert inp.dtype == torch.bfloat16
    x64 = inp.double()
    n = x64.numel() // x64.size(1)
    mean, var = ref_channel_stats(x64)
    # estimate: the first batch's statistics, copied; batch: BatchNorm's
    # update from mean 0 / variance 1 at rate 0.1, with the unbiased variance
    rate = 1.0 if mode == 'estimate' else 0.1
    if mode == 'batch':
        mean, var = rate * mean, (1 - rate) + rate * var * n / (n - 1)
    tol = rounding_tol(torch.float32, n)
    torch.testing.assert_close(
        bcn.pbn.running_mean.double(), mean, rtol=0,
        atol=rate * tol * x64.abs().max().item())
    torch.testing.assert_close(bcn.pbn.running_var.double(), var, rtol=tol,
                               atol=0)
