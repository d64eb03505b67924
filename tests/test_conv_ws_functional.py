"""ws_mm.functional.conv_ws, the pure function behind every WS conv, against
torch's own convolutions run with W_hat from the float64 formula
(tests/references.py; autograd differentiates it, not WS's closed form),
and its gradient observer."""
import pytest
import torch
import torch.nn.functional as F

from ws_mm.functional import (ConvArgs, conv_ws, filter_rows, get_ws_variant,
                              unfilter_rows)
from ws_mm.layers import ConvWS2d
from references import reference_ws_conv

CASES = {
    'conv2d, stride 2, groups 2': (
        (6, 2, 3, 3), (2, 4, 7, 7),
        ConvArgs((2, 2), (1, 1), (1, 1), False, (0, 0), 2),
        lambda x, w, b: F.conv2d(x, w, b, 2, 1, 1, 2)),
    'conv1d, dilation 2': (
        (5, 4, 3), (2, 4, 11),
        ConvArgs((1, ), (2, ), (2, ), False, (0, ), 1),
        lambda x, w, b: F.conv1d(x, w, b, 1, 2, 2)),
    'transposed 2d, groups 2': (
        (4, 3, 3, 3), (2, 4, 5, 5),
        ConvArgs((2, 2), (1, 1), (1, 1), True, (1, 1), 2),
        lambda x, w, b: F.conv_transpose2d(x, w, b, 2, 1, 1, 2)),
}


@pytest.mark.parametrize('case', list(CASES))
@pytest.mark.parametrize('variant', ['A', 'B', 'C'])
def test_equals_torch_conv_with_w_hat_in_float64(case, variant):
    w_shape, x_shape, args, torch_conv = CASES[case]
    torch.manual_seed(0)
    resolved = get_ws_variant(variant)
    w = (torch.randn(w_shape, dtype=torch.float64) * 0.05).requires_grad_()
    x = torch.randn(x_shape, dtype=torch.float64, requires_grad=True)
    b = torch.randn(w_shape[1] * args.groups if args.transposed else
                    w_shape[0], dtype=torch.float64, requires_grad=True)
    g = None
    for fn in (lambda: conv_ws(x, w, b, resolved, args),
               lambda: torch_conv(x, reference_ws_conv(
                   w, variant, transposed=args.transposed, groups=args.groups),
                   b)):
        y = fn()
        grads = torch.autograd.grad(y.sin().sum(), (x, w, b))
        if g is None:
            ours, g = y, grads
        else:
            torch.testing.assert_close(ours, y, rtol=1e-12, atol=1e-12)
            for a, r in zip(g, grads):
                torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


def test_filter_rows_round_trip_and_layout():
    w = torch.arange(4 * 3 * 2 * 2.).view(4, 3, 2, 2)  # transposed, groups 2
    rows = filter_rows(w, transposed=True, groups=2)
    # output channel 0 of group 1 is fed by input channels 2 and 3
    assert torch.equal(rows[3], torch.cat([w[2, 0].flatten(),
                                           w[3, 0].flatten()]))
    assert torch.equal(unfilter_rows(rows, w.shape, True, 2), w)
    plain = torch.randn(6, 2, 3, 3)
    assert filter_rows(plain).data_ptr() == plain.data_ptr()  # a view


def test_the_w_hat_gradient_observer_sees_autograds_gradient():
    torch.manual_seed(1)
    conv = ConvWS2d(4, 6, 3, padding=1).double()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    seen = []
    handle = conv.register_w_hat_grad_hook(lambda g: seen.append(g.clone()))
    conv(x).square().sum().backward()
    w_hat = conv.standardized_weight().detach().requires_grad_()
    (expected, ) = torch.autograd.grad(
        F.conv2d(x, w_hat, conv.bias, padding=1).square().sum(), w_hat)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], expected, rtol=1e-12, atol=1e-12)

    handle.remove()
    conv(x).sum().backward()
    assert len(seen) == 1


def test_a_w_hat_hook_may_replace_the_gradient():
    conv = ConvWS2d(4, 6, 3, padding=1).double()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    conv.register_w_hat_grad_hook(torch.zeros_like)
    conv(x).square().sum().backward()
    assert torch.count_nonzero(conv.weight.grad) == 0
    assert torch.count_nonzero(conv.bias.grad) > 0


def test_the_variant_is_resolved_once_at_construction():
    conv = ConvWS2d(3, 4, 3, variant='B', eps=1e-3)
    assert conv.variant == get_ws_variant('B', 1e-3)
    assert conv.variant.eps == 1e-3
