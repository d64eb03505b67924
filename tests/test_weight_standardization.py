"""Weight Standardization: the function and the conv layers against an
independent float64 reference written from the paper's formulas
(tests/references.py).

Exactness is checked in float64. float32 and half-precision checks allow the
rounding of the values compared: a sum of n terms is off by about
eps * sqrt(n) * the sum of their magnitudes (eps the dtype's machine epsilon;
sqrt(n): rounding errors of random sign add up like a random walk).
"""
import pytest
import torch
from torch import nn
from torch.func import functional_call

from ws_mm.functional import WS_VARIANTS, WSVariant, weight_standardization
from ws_mm.layers import ConvTransposeWS2d, ConvWS1d, ConvWS2d, ConvWS3d
from references import (REFERENCE_VARIANTS, reference_ws, rel_error,
                        rounding_tol)


def test_reference_variants_match_the_library_table():
    for name, (unbiased, eps_in_sqrt, eps) in REFERENCE_VARIANTS.items():
        variant = WS_VARIANTS[name]
        assert variant.name == name
        assert (variant.unbiased, variant.eps_in_sqrt,
                variant.eps) == (unbiased, eps_in_sqrt, eps)


def test_a_variant_of_ones_own_standardizes_by_its_numbers():
    own = WSVariant(True, True, 1e-5)  # B's numbers, under no name
    assert own.name == 'custom' and own.same_as(WS_VARIANTS['B'])
    assert not own.same_as(WS_VARIANTS['A'])
    assert not own.same_as(WS_VARIANTS['B']._replace(eps=1e-3))
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(weight_standardization(w, own),
                               reference_ws(w, 'B'), rtol=0, atol=1e-12)


@pytest.mark.parametrize('variant', ['A', 'B', 'C'])
@pytest.mark.parametrize('shape', [(8, 3, 3, 3), (5, 4, 1, 1), (6, 2, 3),
                                   (4, 2, 2, 3, 3)])
def test_forward_and_backward_match_reference(variant, shape):
    torch.manual_seed(0)
    # Small spread, as trained conv weights have: makes the eps terms matter.
    w = (torch.randn(shape, dtype=torch.float64) * 0.01 + 0.003)
    w.requires_grad_(True)
    grad_out = torch.randn(shape, dtype=torch.float64)

    ours = weight_standardization(w, variant)
    (g_ours, ) = torch.autograd.grad(ours, w, grad_out)
    ref = reference_ws(w, variant)
    (g_ref, ) = torch.autograd.grad(ref, w, grad_out)

    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize('variant', ['A', 'B', 'C'])
def test_gradcheck(variant):
    torch.manual_seed(1)
    w = torch.randn(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: weight_standardization(x, variant), (w, ))


def test_variants_differ_where_the_paper_table_says():
    # std 0.003 filters: eps after vs inside the sqrt differ by ~1.45x.
    torch.manual_seed(2)
    w = torch.randn(16, 64, 3, 3, dtype=torch.float64)
    w = w / w.flatten(1).std(1).view(-1, 1, 1, 1) * 0.003
    a = weight_standardization(w, 'A').flatten(1).std(1)
    b = weight_standardization(w, 'B').flatten(1).std(1)
    ratio = (a / b).mean().item()  # s_B = sqrt(0.003^2 + 1e-5) = 1.45 s_A
    assert 1.40 < ratio < 1.50, ratio


@pytest.mark.parametrize('variant', ['A', 'B', 'C'])
def test_filters_have_mean_0_and_std_1(variant):
    torch.manual_seed(3)
    w = torch.randn(32, 16, 3, 3) * 0.5 + 2.0
    unbiased, _, _ = REFERENCE_VARIANTS[variant]
    rows = weight_standardization(w, variant, eps=0.0).flatten(1).double()
    n = rows.shape[1]
    # float32 statistics of n weights: the mean is off by up to about
    # eps * sqrt(n) * |w|, which shifts the row by that over the std (here
    # 2.5 / 0.5); the std is off by about eps * sqrt(n) relative. Not
    # centering, or the other variance divisor, is off by >3e-3.
    rows_w = w.double().flatten(1)
    shift = rows_w.abs().max(1).values / rows_w.std(1)
    torch.testing.assert_close(
        rows.mean(1), torch.zeros(32, dtype=torch.float64), rtol=0,
        atol=rounding_tol(torch.float32, n) * shift.max().item())
    torch.testing.assert_close(
        rows.var(1, correction=int(unbiased)).sqrt(),
        torch.ones(32, dtype=torch.float64), rtol=0,
        atol=rounding_tol(torch.float32, n))


@pytest.mark.parametrize('variant', ['A', 'B', 'C'])
def test_constant_filter_gives_finite_outputs_and_gradients(variant):
    w = torch.full((4, 3, 3, 3), 0.25, requires_grad=True)
    conv = ConvWS2d(3, 4, 3, variant=variant)
    with torch.no_grad():
        conv.weight.fill_(0.7)
    y = conv(torch.randn(2, 3, 8, 8))
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(conv.weight.grad).all()
    out = weight_standardization(w, variant)
    out.pow(2).sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(w.grad).all()


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('variant', ['A', 'B', 'C'])
def test_a_constant_filter_gets_the_limit_of_the_gradient(variant, dtype):
    """W_hat of a constant filter is 0, and eq. 14-15's projection on W_hat
    vanishes with it: the gradient is scale * (g - mean(g)), where autograd
    through the formula gives 0 / 0 for variant A (s = std + eps, std 0).
    0.25 sums exactly, so W - mean is exactly 0."""
    w = torch.full((3, 27), 0.25, dtype=dtype, requires_grad=True)
    g = torch.randn(3, 27, dtype=dtype)
    w_hat = weight_standardization(w, variant)
    (grad, ) = torch.autograd.grad(w_hat, w, g)
    _, eps_in_sqrt, eps = REFERENCE_VARIANTS[variant]
    scale = 1 / (eps**0.5 if eps_in_sqrt else eps)
    g = g.double()
    assert torch.count_nonzero(w_hat) == 0
    assert rel_error(grad, scale * (g - g.mean(1, keepdim=True))) <= (
        rounding_tol(dtype, 27))


@pytest.mark.parametrize('variant', ['A', 'B', 'C'])
def test_float32_gradient_is_the_reference_up_to_rounding(variant):
    torch.manual_seed(2)
    w = (torch.randn(64, 256, 3, 3) * 0.02).requires_grad_()
    grad_out = torch.randn_like(w)
    (grad, ) = torch.autograd.grad(weight_standardization(w, variant), w,
                                   grad_out)
    w64 = w.detach().double().requires_grad_()
    (ref, ) = torch.autograd.grad(reference_ws(w64, variant), w64,
                                  grad_out.double())
    # Per filter the gradient is (g - mean(g) - W_hat <g, W_hat> / d) / s,
    # two sums over the filter's n weights: off by about eps * sqrt(n) times
    # the terms' magnitudes. A wrong formula is off by the gradient's size.
    rows = w64.detach().flatten(1)
    std = rows.std(1, keepdim=True)
    w_hat = reference_ws(rows, variant).abs()
    g = grad_out.double().flatten(1).abs()
    terms = (g + g.mean(1, keepdim=True) +
             w_hat * (g * w_hat).mean(1, keepdim=True)) / std
    atol = rounding_tol(torch.float32, rows.shape[1]) * terms.max().item()
    torch.testing.assert_close(grad, ref.float(), rtol=0, atol=atol)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_statistics_are_computed_in_float32(dtype):
    # Filters with small spread on a large offset: in fp16/bf16 arithmetic the
    # centered values would be pure rounding noise.
    torch.manual_seed(4)
    w32 = torch.randn(8, 27) * 1e-3 + 1.0
    w = w32.to(dtype)
    out = weight_standardization(w, 'A')
    assert out.dtype == dtype
    ref = reference_ws(w.float(), 'A')
    # The result is rounded to `dtype` (half an ulp: eps / 2 relative). The
    # float32 mean is off by about eps32 * sqrt(n) * |w|, which W_hat
    # carries times 1 / s (1 / (std + eps) per row). Statistics in `dtype`
    # would be off by ~eps_dtype * |w| / s: hundreds of times more.
    rows = w.double()
    scale = 1 / (rows.std(1, keepdim=True) + 1e-5)
    bound = (torch.finfo(dtype).eps * ref.abs() + rounding_tol(
        torch.float32, rows.shape[1]) * rows.abs().amax(1, keepdim=True) *
        scale)
    error = (out.double() - ref).abs()
    assert (error <= bound).all(), (error / bound).max()


def test_autocast_bf16_conv_is_finite_with_gradients():
    torch.manual_seed(5)
    conv = ConvWS2d(8, 16, 3, padding=1)
    x = torch.randn(2, 8, 16, 16, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = conv(x)
    assert y.dtype == torch.bfloat16
    y.float().square().mean().backward()
    assert torch.isfinite(y).all()
    assert torch.isfinite(conv.weight.grad).all() and conv.weight.grad.abs(
    ).sum() > 0
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize('cls,plain,x_shape', [
    (ConvWS1d, nn.Conv1d, (2, 4, 9)),
    (ConvWS2d, nn.Conv2d, (2, 4, 9, 9)),
    (ConvWS3d, nn.Conv3d, (2, 4, 5, 5, 5)),
])
@pytest.mark.parametrize('variant', ['A', 'B', 'C'])
def test_conv_layers_convolve_with_the_reference_weight(
        cls, plain, x_shape, variant):
    torch.manual_seed(6)
    conv = cls(4, 6, 3, padding=1, groups=2, variant=variant).double()
    ref = plain(4, 6, 3, padding=1, groups=2).double()
    with torch.no_grad():
        ref.weight.copy_(reference_ws(conv.weight, variant))
        ref.bias.copy_(conv.bias)
    x = torch.randn(x_shape, dtype=torch.float64)
    torch.testing.assert_close(conv(x), ref(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('groups', [1, 2])
def test_transposed_conv_standardizes_each_output_channel(groups):
    torch.manual_seed(7)
    conv = ConvTransposeWS2d(4, 6, 3, stride=2, groups=groups,
                             variant='B').double()
    w = conv.weight  # (in, out / groups, k, k)
    cin_g, cout_g = 4 // groups, 6 // groups
    # Output channel o of group g: weight[g*cin_g:(g+1)*cin_g, o], as a row.
    rows = torch.stack([
        w[g * cin_g:(g + 1) * cin_g, o].reshape(-1) for g in range(groups)
        for o in range(cout_g)
    ])
    std_rows = reference_ws(rows, 'B')
    expected = torch.empty_like(w)
    for g in range(groups):
        for o in range(cout_g):
            expected[g * cin_g:(g + 1) * cin_g, o] = std_rows[
                g * cout_g + o].view(cin_g, 3, 3)
    ref = nn.ConvTranspose2d(4, 6, 3, stride=2, groups=groups).double()
    with torch.no_grad():
        ref.weight.copy_(expected)
        ref.bias.copy_(conv.bias)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(conv(x), ref(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(
        conv(x, output_size=[12, 12]), ref(x, output_size=[12, 12]))


@pytest.mark.parametrize('variant', ['A', 'B', 'C'])
@pytest.mark.parametrize('cls', [ConvWS2d, ConvTransposeWS2d])
def test_layer_gradcheck(cls, variant):
    """The layer's own training path (the autograd Function _WSConvolution:
    W_hat recomputed in the backward, the closed form over it), for the
    input, the weight and the bias, strided and grouped."""
    torch.manual_seed(8)
    conv = cls(4, 6, 3, stride=2, padding=1, groups=2,
               variant=variant).double()
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    # Small filters, as trained ones: the eps terms matter.
    w = (conv.weight.detach() * 0.1).requires_grad_()
    b = conv.bias.detach().clone().requires_grad_()

    def layer(x, w, b):
        return functional_call(conv, {'weight': w, 'bias': b}, (x, ))

    assert type(layer(x, w, b).grad_fn).__name__ == '_WSConvolutionBackward'
    assert torch.autograd.gradcheck(layer, (x, w, b))


def test_bad_arguments_fail_at_construction():
    with pytest.raises(ValueError, match=r"variant 'D'.*\['A', 'B', 'C'\]"):
        ConvWS2d(3, 4, 3, variant='D')
    with pytest.raises(ValueError, match='eps must be a finite float >= 0'):
        ConvWS2d(3, 4, 3, eps=-1e-5)
    with pytest.raises(ValueError, match='ConvWS2d.*single weight.*plain conv'):
        ConvWS2d(4, 4, 1, groups=4)


def test_eps_overrides_the_variant_default():
    conv = ConvWS2d(3, 4, 3, variant='C', eps=1e-8)
    assert conv.variant.eps == 1e-8
    assert ConvWS2d(3, 4, 3, variant='C').variant.eps == 1e-6
    assert 'variant=C' in repr(conv)


def test_double_backward_is_refused_rather_than_wrong():
    w = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    (g, ) = torch.autograd.grad(weight_standardization(w).pow(3).sum(), w,
                                create_graph=True)
    with pytest.raises(RuntimeError, match='once_differentiable'):
        g.sum().backward()
