"""In training a WS conv keeps no second copy of its weight for the backward.

The conv's backward needs W_hat; ws_mm recomputes it then instead of keeping
it from the forward. These tests check that nothing is kept, that the
gradients are exactly those of a conv that kept W_hat, and that autograd's
guarantees survive: the in-place modification check, higher-order gradients
and activation checkpointing.
"""
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ws_mm.functional import weight_standardization
from ws_mm.layers import ConvTransposeWS2d, ConvWS2d


def reference(conv, x):
    """The same conv written directly, keeping W_hat as autograd would."""
    w = conv.weight
    if isinstance(conv, ConvTransposeWS2d):
        w_hat = weight_standardization(w.transpose(0, 1)).transpose(0, 1)
        return F.conv_transpose2d(x, w_hat, conv.bias, padding=1)
    return F.conv2d(x, weight_standardization(w), conv.bias, padding=1)


def grads(conv, x, forward):
    conv.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_()
    forward(conv, x).pow(2).sum().backward()
    return x.grad, conv.weight.grad, conv.bias.grad


@pytest.mark.parametrize('cls', [ConvWS2d, ConvTransposeWS2d])
def test_w_hat_is_freed_after_the_forward(cls):
    torch.manual_seed(0)
    conv = cls(8, 16, 3, padding=1)
    seen = []
    original = conv.standardized_weight

    def spy():
        w_hat = original()
        seen.append(weakref.ref(w_hat))
        return w_hat

    conv.standardized_weight = spy
    y = conv(torch.randn(2, 8, 6, 6, requires_grad=True))
    assert seen[0]() is None, 'W_hat is still alive after the forward'
    y.sum().backward()  # and the backward still works
    assert conv.weight.grad is not None


@pytest.mark.parametrize('cls', [ConvWS2d, ConvTransposeWS2d])
def test_gradients_equal_those_of_a_conv_that_keeps_w_hat(cls):
    torch.manual_seed(0)
    conv = cls(8, 16, 3, padding=1).double()
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    for ours, ref in zip(grads(conv, x, lambda c, x: c(x)),
                         grads(conv, x, reference)):
        torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_in_place_edits_before_backward_are_still_refused():
    conv = ConvWS2d(4, 4, 3, padding=1)
    y = conv(torch.randn(1, 4, 5, 5, requires_grad=True))
    with torch.no_grad():
        conv.weight.mul_(2)  # an optimizer step before backward()
    with pytest.raises(RuntimeError, match='weight .*modified in place'):
        y.sum().backward()

    x = torch.randn(1, 4, 5, 5, requires_grad=True).clone()
    y = conv(x)
    with torch.no_grad():
        x.add_(1)
    with pytest.raises(RuntimeError, match='modified in place'):
        y.sum().backward()


def test_gradient_penalty_through_the_input_gradient():
    """backward(create_graph=True) differentiates the recomputed W_hat."""
    torch.manual_seed(1)
    conv = ConvWS2d(4, 6, 3, padding=1).double()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)

    def penalty_grad(forward):
        conv.zero_grad(set_to_none=True)
        xr = x.clone().requires_grad_()
        (gx, ) = torch.autograd.grad(forward(conv, xr).sin().sum(), xr,
                                     create_graph=True)
        gx.square().sum().backward()
        return conv.weight.grad

    torch.testing.assert_close(penalty_grad(lambda c, x: c(x)),
                               penalty_grad(reference))


@pytest.mark.parametrize('use_reentrant', [True, False])
def test_activation_checkpointing(use_reentrant):
    torch.manual_seed(2)
    # float64: float32 conv kernels may round differently between two calls
    conv = ConvWS2d(8, 8, 3, padding=1).double()
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)

    def checkpointed(c, x):
        return checkpoint(lambda t: F.relu(c(t)) * 2, x,
                          use_reentrant=use_reentrant)

    for ours, ref in zip(grads(conv, x, checkpointed),
                         grads(conv, x, lambda c, x: F.relu(reference(c, x)) * 2)):
        torch.testing.assert_close(ours, ref)
