"""The inference cache of W_hat: reused while the weight is unchanged, never
stale after any way a weight can change.

A W_hat from the cache and one computed afresh come from the same function
on the same weight, so they are compared bit for bit.
"""
import copy

import pytest
import torch
import torch.nn.functional as F

from ws_mm.functional import weight_standardization
from ws_mm.layers import ConvTransposeWS2d, ConvWS2d
from references import rounding_tol


def fresh_w_hat(conv):
    return weight_standardization(conv.weight.detach(), conv.variant,
                                  conv.variant.eps)


def assert_equal(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.fixture
def conv():
    torch.manual_seed(0)
    return ConvWS2d(4, 8, 3, padding=1).eval()


def test_reused_under_no_grad_and_inference_mode(conv):
    with torch.no_grad():
        first = conv.standardized_weight()
        assert conv.standardized_weight() is first
    with torch.inference_mode():
        assert conv.standardized_weight() is first
    assert_equal(first, fresh_w_hat(conv))


def test_not_used_when_the_weight_needs_a_gradient(conv):
    # eval mode alone does not make W_hat constant: gradients must reach W.
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        conv(x)
    conv(x).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_invalidated_by_an_optimizer_step(conv):
    with torch.no_grad():
        before = conv.standardized_weight().clone()
    conv.weight.grad = torch.randn_like(conv.weight)
    torch.optim.SGD(conv.parameters(), lr=0.5).step()
    with torch.no_grad():
        after = conv.standardized_weight()
    assert not torch.allclose(before, after)
    assert_equal(after, fresh_w_hat(conv))


def test_invalidated_by_in_place_edit_and_load_state_dict(conv):
    with torch.no_grad():
        conv.standardized_weight()
        conv.weight[0].mul_(-1.0)
        assert_equal(conv.standardized_weight(), fresh_w_hat(conv))
    other = ConvWS2d(4, 8, 3, padding=1)
    conv.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert_equal(conv.standardized_weight(), fresh_w_hat(other))


def test_invalidated_by_dtype_moves(conv):
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        conv(x)
        conv.double()
        y64 = conv(x.double())
        assert conv.standardized_weight().dtype == torch.float64
        conv.float()
        # float32 against float64: each output sums fan_in products, off by
        # about eps * sqrt(fan_in) * the sum of their magnitudes. A stale
        # float64 W_hat would not even run with float32 input.
        fan_in = conv.weight[0].numel()
        magnitude = F.conv2d(x.double().abs(), fresh_w_hat(conv).double().abs(),
                             conv.bias.double().abs(), padding=1)
        atol = rounding_tol(torch.float32, fan_in) * magnitude.max().item()
        torch.testing.assert_close(conv(x), y64.float(), rtol=0, atol=atol)
        conv.bfloat16()
        assert conv.standardized_weight().dtype == torch.bfloat16


@pytest.mark.gpu
def test_invalidated_by_device_moves(conv):
    """To the GPU and back: each time W_hat is on the weight's device (a
    stale one would not even run with the moved input), and the same as
    one computed afresh there."""
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        on_cpu = conv.standardized_weight()
        conv(x)
        conv.cuda()
        on_gpu = conv.standardized_weight()
        assert on_gpu.device.type == 'cuda'
        assert_equal(on_gpu, fresh_w_hat(conv))
        assert conv(x.cuda()).device.type == 'cuda'
        # The GPU reduces each filter in another order: off by float32
        # rounding of sums over fan_in weights, relative to |w| / std.
        rows = conv.weight.detach().double().flatten(1).cpu()
        shift = (rows.abs().amax(1) / rows.std(1)).max().item()
        tol = rounding_tol(torch.float32, rows.shape[1])
        torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=tol,
                                   atol=tol * shift)
        conv.cpu()
        back = conv.standardized_weight()
        assert back.device.type == 'cpu'
        assert_equal(back, fresh_w_hat(conv))
        assert conv(x).device.type == 'cpu'


def test_data_edits_are_picked_up_after_train_or_eval(conv):
    with torch.no_grad():
        conv.standardized_weight()
    conv.weight.data.mul_(-1.0)  # bypasses the version counter
    conv.eval()
    with torch.no_grad():
        assert_equal(conv.standardized_weight(), fresh_w_hat(conv))


def test_a_deep_copy_recomputes_for_its_own_weight(conv):
    with torch.no_grad():
        conv.standardized_weight()
    clone = copy.deepcopy(conv)
    with torch.no_grad():
        clone.weight.add_(1.0)
        assert_equal(clone.standardized_weight(), fresh_w_hat(clone))
        assert_equal(conv.standardized_weight(), fresh_w_hat(conv))


def test_frozen_layer_trains_on_a_cache_made_in_inference_mode():
    # A frozen stage (mmdet's frozen_stages) uses the cache during training;
    # the cache may have been made during a validation in inference mode.
    conv = ConvTransposeWS2d(4, 4, 2, stride=2)
    conv.weight.requires_grad_(False)
    with torch.inference_mode():
        conv(torch.randn(1, 4, 3, 3))
    x = torch.randn(1, 4, 3, 3, requires_grad=True)
    conv(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
