"""ws_mm.functional.validate, the argument checks of ws_mm's functions,
layers and hooks: what they accept, what they refuse (``True`` is not a
number here) and that each message names the owner and the argument; and
the one value they let through on purpose, ``momentum=None``, in both modes
of BatchChannelNorm against float64 computations written here."""
import re

import pytest
import torch
from torch import nn

from references import ref_bcn, ref_channel_stats
from ws_mm.functional.validate import non_negative, positive_int, rate
from ws_mm.layers import BatchChannelNorm
from ws_mm.toolbox.hooks import WSGradientHook


# ------------------------------------------------------------- the functions
@pytest.mark.parametrize('value', [1, 2, 10**9])
def test_positive_int_returns_what_it_accepts(value):
    assert positive_int('Owner', 'arg', value) is value


@pytest.mark.parametrize('value,error,shown', [
    (True, TypeError, 'True (bool)'),
    (False, TypeError, 'False (bool)'),
    (2.0, TypeError, '2.0 (float)'),
    ('3', TypeError, "'3' (str)"),
    (None, TypeError, 'None (NoneType)'),
    (0, ValueError, '0'),
    (-4, ValueError, '-4'),
])
def test_positive_int_refuses(value, error, shown):
    with pytest.raises(error) as info:
        positive_int('Owner', 'arg', value)
    assert str(info.value) == (f'Owner: arg must be a positive int, got '
                               f'{shown}')


@pytest.mark.parametrize('value', [1, 0.1, 1e-9, 0.5])
def test_rate_returns_what_it_accepts(value):
    assert rate('Owner', 'arg', value) is value


@pytest.mark.parametrize('value,error,shown', [
    (True, TypeError, 'True (bool)'), (False, TypeError, 'False (bool)'),
    ('0.1', TypeError, "'0.1' (str)"), (None, TypeError, 'None (NoneType)'),
    (0, ValueError, '0'), (0.0, ValueError, '0.0'), (-0.1, ValueError, '-0.1'),
    (1.0001, ValueError, '1.0001'), (2, ValueError, '2'),
    (float('nan'), ValueError, 'nan'),
])
@pytest.mark.parametrize('allow_none', [False, True])
def test_rate_refuses(value, error, shown, allow_none):
    if value is None and allow_none:
        assert rate('Owner', 'arg', None, allow_none=True) is None
        return
    with pytest.raises(error) as info:
        rate('Owner', 'arg', value, allow_none=allow_none)
    also = ', or None' if allow_none else ''
    assert str(info.value) == (f'Owner: arg must be in (0, 1] (e.g. 0.1)'
                               f'{also}, got {shown}')


@pytest.mark.parametrize('value,expected', [(0, 0.0), (1, 1.0),
                                            (1e-5, 1e-5), (3.5, 3.5)])
def test_non_negative_returns_a_float(value, expected):
    result = non_negative('Owner', 'arg', value)
    assert type(result) is float and result == expected


@pytest.mark.parametrize('value,error,shown', [
    (True, TypeError, 'True (bool)'), (False, TypeError, 'False (bool)'),
    ('1e-5', TypeError, "'1e-5' (str)"), (None, TypeError, 'None (NoneType)'),
    (-1e-5, ValueError, '-1e-05'), (-1, ValueError, '-1'),
    (float('nan'), ValueError, 'nan'), (float('inf'), ValueError, 'inf'),
])
def test_non_negative_refuses(value, error, shown):
    with pytest.raises(error) as info:
        non_negative('Owner', 'arg', value)
    assert str(info.value) == ('Owner: arg must be a finite float >= 0 '
                               f'(e.g. 1e-5), got {shown}')


# ------------------------------------------------------------------ the users
@pytest.mark.parametrize('interval,error', [(True, TypeError),
                                            (2.0, TypeError),
                                            (0, ValueError)])
def test_ws_gradient_hook_refuses_a_bad_interval(interval, error):
    with pytest.raises(error, match=re.escape(
            'WSGradientHook: interval must be a positive int, got '
            f'{interval}')):
        WSGradientHook(interval=interval)
    assert WSGradientHook(interval=1).interval == 1


# ----------------------------------------------------- momentum=None, by mode
def channel_rows(x):
    return x.transpose(0, 1).flatten(1)


def batches(count):
    """Batches of different sizes, means and spreads: each one's
    statistics differ clearly from the others'."""
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2 + i % 3, 8, 5, 5, generator=g, dtype=torch.float64)
            * (1 + i % 4) + (i % 5 - 2) for i in range(count)]


def test_momentum_none_in_estimate_mode_is_the_cumulative_average():
    """Every batch weighs the same, however many: the mean of the batches'
    means and of their variances (each batch's second moment around the
    estimate before it, the first batch's own variance), in float64.
    Twelve batches: a rate of 1 / t is also what the default momentum 0.1
    gives for the first ten updates."""
    bcn = BatchChannelNorm(8, 4, momentum=None).double().train()
    assert bcn.pbn.momentum is None
    means, second_moments = [], []
    for t, x in enumerate(batches(12), start=1):
        rows = channel_rows(x)
        estimate = (rows.mean(1) if not means
                    else torch.stack(means).mean(0))
        second_moments.append((rows - estimate[:, None]).square().mean(1))
        means.append(rows.mean(1))
        bcn(x)
        torch.testing.assert_close(bcn.pbn.running_mean,
                                   torch.stack(means).mean(0),
                                   rtol=1e-12, atol=1e-12, msg=f'batch {t}')
        torch.testing.assert_close(bcn.pbn.running_var,
                                   torch.stack(second_moments).mean(0),
                                   rtol=1e-12, atol=1e-12, msg=f'batch {t}')
    assert bcn.pbn.num_batches_tracked.item() == 12


def test_momentum_none_in_batch_mode_is_batchnorms():
    """BatchNorm2d(momentum=None) then group normalization with the
    per-group affine, in training (batch statistics, running averages
    updated) and in evaluation (those averages)."""
    torch.manual_seed(0)
    bcn = BatchChannelNorm(8, 4, mode='batch', momentum=None).double()
    bn = nn.BatchNorm2d(8, momentum=None).double()
    with torch.no_grad():
        for p in (bcn.pbn.weight, bcn.pbn.bias, bcn.weight, bcn.bias):
            p.normal_()
        bn.weight.copy_(bcn.pbn.weight)
        bn.bias.copy_(bcn.pbn.bias)

    def reference(x):
        stats = (ref_channel_stats(x) if bn.training else
                 (bn.running_mean.clone(), bn.running_var.clone()))
        bn(x)  # BatchNorm's running averages, the layer's reference
        return ref_bcn(x, *stats, bn.weight, bn.bias, bcn.weight, bcn.bias,
                       num_groups=4)

    for mode in ('train', 'eval'):
        bcn.train(mode == 'train')
        bn.train(mode == 'train')
        for t, x in enumerate(batches(12), start=1):
            torch.testing.assert_close(bcn(x), reference(x), rtol=1e-10,
                                       atol=1e-10, msg=f'{mode} {t}')
        for key in ('running_mean', 'running_var', 'num_batches_tracked'):
            torch.testing.assert_close(getattr(bcn.pbn, key),
                                       getattr(bn, key), rtol=1e-12,
                                       atol=1e-12, msg=key)
    assert bn.num_batches_tracked.item() == 12
    # the cumulative average indeed: the mean of the unbiased variances
    variances = torch.stack([channel_rows(x).var(1) for x in batches(12)])
    torch.testing.assert_close(bcn.pbn.running_var, variances.mean(0),
                               rtol=1e-12, atol=1e-12)


def test_momentum_none_is_shown_and_bad_ones_name_the_layer():
    assert 'momentum=None' in repr(BatchChannelNorm(8, 4, momentum=None).pbn)
    with pytest.raises(TypeError, match=re.escape(
            'BatchChannelNorm: momentum must be in (0, 1] (e.g. 0.1), or '
            'None, got True (bool)')):
        BatchChannelNorm(8, 4, momentum=True)
