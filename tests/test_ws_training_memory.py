"""In training a WS conv keeps no second copy of its weight for the backward,
and allocates no weight-sized memory for W_hat.

The conv's backward needs W_hat; ws_mm recomputes it then instead of keeping
it from the forward. These tests check that nothing weight-sized but W itself
is kept, that a training step allocates weight-sized memory only where a
plain conv does and for the gradient w.r.t. W (W_hat goes into a reused
buffer), that the gradients are exactly those of torch's own conv class run
with W_hat (from the float64 formula of tests/references.py, which autograd
differentiates and keeps), for every conv type and padding, and that autograd's guarantees survive: the
in-place modification check, gradient penalties, activation checkpointing
and autocast.
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from ws_mm.layers import ConvTransposeWS2d, ConvWS1d, ConvWS2d, ConvWS3d
from references import reference_ws_conv


def reference(conv, x, **kwargs):
    """The same conv composed from autograd's ops: torch's own conv class
    called with W_hat in place of its weight, W_hat from the float64
    formula in the weight's dtype (autograd keeps it, and differentiates
    it: WS's closed-form backward is not involved)."""
    plain = copy.deepcopy(conv)
    plain.__class__ = next(c for c in type(conv).__mro__
                           if c.__module__.startswith('torch.nn'))
    w_hat = reference_ws_conv(conv.weight, conv.variant.name,
                              conv.variant.eps, conv.transposed, conv.groups)
    params = {'weight': w_hat.to(conv.weight.dtype), 'bias': conv.bias}
    return functional_call(plain, params, (x, ), kwargs)


def grads(conv, x, forward):
    conv.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_()
    forward(conv, x).pow(2).sum().backward()
    return x.grad, conv.weight.grad, conv.bias.grad


def weight_sized_saved_tensors(forward):
    """Tensors with as many elements as the weight that autograd keeps for
    the backward of ``forward()``."""
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return saved


@pytest.mark.parametrize('cls', [ConvWS2d, ConvTransposeWS2d])
def test_only_the_weight_itself_is_kept_for_the_backward(cls):
    torch.manual_seed(0)
    conv = cls(8, 16, 3, padding=1)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    n = conv.weight.numel()

    kept = [t for t in weight_sized_saved_tensors(lambda: conv(x))
            if t.numel() == n]
    assert kept and all(t.data_ptr() == conv.weight.data_ptr() for t in kept)
    # The check sees W_hat where autograd's own composition keeps it.
    kept = [t for t in weight_sized_saved_tensors(lambda: reference(conv, x))
            if t.numel() == n]
    assert any(t.data_ptr() != conv.weight.data_ptr() for t in kept)


CASES = {
    '1d': lambda: ConvWS1d(4, 6, 3, padding=1),
    '2d stride, groups, dilation': lambda: ConvWS2d(
        4, 6, 3, stride=2, padding=2, dilation=2, groups=2),
    "2d 'same', even kernel": lambda: ConvWS2d(4, 6, 4, padding='same'),
    '2d reflect padding': lambda: ConvWS2d(4, 6, 3, padding=1,
                                           padding_mode='reflect'),
    '3d': lambda: ConvWS3d(4, 6, 3, padding=1),
    'transposed, groups': lambda: ConvTransposeWS2d(4, 6, 3, stride=2,
                                                    padding=1, groups=2),
}
SHAPES = {'1d': (2, 4, 9), '3d': (2, 4, 5, 5, 5)}


def outermost_op(event):
    """The name of the outermost aten op around a profiler ``event``: the
    op that asked for the memory ``event`` allocates."""
    op = event
    while event.cpu_parent is not None:
        event = event.cpu_parent
        if event.name.startswith('aten::'):
            op = event
    return op.name


def weight_sized_allocations(conv, x):
    """The ops under which at least the weight's size is allocated in one
    training step (after a first one: buffers reused across steps are made
    there)."""
    nbytes = conv.weight.numel() * conv.weight.element_size()
    conv(x).sum().backward()
    with profile(activities=[ProfilerActivity.CPU],
                 profile_memory=True) as prof:
        conv(x).sum().backward()
    return sorted(outermost_op(e) for e in prof.events()
                  if e.self_cpu_memory_usage >= nbytes)


WS_GRADIENT = 'aten::native_batch_norm_backward'


@pytest.mark.parametrize('plain,ws,dims', [(nn.Conv1d, ConvWS1d, 1),
                                           (nn.Conv2d, ConvWS2d, 2),
                                           (nn.Conv3d, ConvWS3d, 3)])
def test_a_training_step_allocates_as_a_plain_conv_does_and_the_gradient(
        plain, ws, dims):
    """What a plain conv allocates, and the gradient w.r.t. W, which WS's
    backward forms in torch's batch-norm backward (twice in some torch
    releases, one of them never written). W_hat allocates nothing: a
    reused buffer holds it."""
    torch.manual_seed(0)
    x = torch.randn((2, 32) + (6, ) * dims, requires_grad=True)
    allocations = weight_sized_allocations(plain(32, 64, 3, padding=1), x)
    assert allocations and WS_GRADIENT not in allocations
    ours = weight_sized_allocations(ws(32, 64, 3, padding=1), x)
    assert WS_GRADIENT in ours
    assert [op for op in ours if op != WS_GRADIENT] == allocations


@pytest.mark.parametrize('case', list(CASES))
def test_gradients_equal_those_of_autograds_composition(case):
    torch.manual_seed(0)
    conv = CASES[case]().double()
    x = torch.randn(SHAPES.get(case, (2, 4, 7, 7)), dtype=torch.float64)
    kwargs = {'output_size': [14, 14]} if 'transposed' in case else {}
    for ours, ref in zip(grads(conv, x, lambda c, x: c(x, **kwargs)),
                         grads(conv, x, lambda c, x: reference(c, x, **kwargs))):
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_in_place_edits_before_backward_are_still_refused():
    conv = ConvWS2d(4, 4, 3, padding=1)
    y = conv(torch.randn(1, 4, 5, 5, requires_grad=True))
    with torch.no_grad():
        conv.weight.mul_(2)  # an optimizer step before backward()
    with pytest.raises(RuntimeError, match='modified by an inplace operation'):
        y.sum().backward()

    x = torch.randn(1, 4, 5, 5, requires_grad=True).clone()
    y = conv(x)
    with torch.no_grad():
        x.add_(1)
    with pytest.raises(RuntimeError, match='modified by an inplace operation'):
        y.sum().backward()


@pytest.mark.parametrize('checkpointed', [False, True])
def test_gradient_penalty_through_the_input_gradient(checkpointed):
    """backward(create_graph=True) differentiates the recomputed W_hat, also
    under non-reentrant checkpointing (which allows one unpack per tensor)."""
    torch.manual_seed(1)
    conv = ConvWS2d(4, 6, 3, padding=1).double()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)

    def penalty_grad(forward):
        conv.zero_grad(set_to_none=True)
        xr = x.clone().requires_grad_()
        y = (checkpoint(forward, conv, xr, use_reentrant=False)
             if checkpointed else forward(conv, xr))
        (gx, ) = torch.autograd.grad(y.sin().sum(), xr, create_graph=True)
        gx.square().sum().backward()
        return conv.weight.grad

    torch.testing.assert_close(penalty_grad(lambda c, x: c(x)),
                               penalty_grad(reference))


def test_a_penalty_on_the_weight_gradient_is_refused_not_wrong():
    conv = ConvWS2d(4, 6, 3, padding=1).double()
    y = conv(torch.randn(2, 4, 5, 5, dtype=torch.float64))
    (gw, ) = torch.autograd.grad(y.sin().sum(), conv.weight, create_graph=True)
    with pytest.raises(RuntimeError, match='once_differentiable'):
        gw.square().sum().backward()


def test_reentrant_checkpointing_keeps_no_w_hat_either():
    """Its first pass runs under no_grad, where W_hat would be cached."""
    conv = ConvWS2d(8, 8, 3, padding=1)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    checkpoint(conv, x, use_reentrant=True).sum().backward()
    assert conv._ws_cache is None and conv.weight.grad is not None


@pytest.mark.parametrize('train', [True, False])
def test_meta_tensors_give_shapes(train):
    conv = ConvWS2d(4, 6, 3, stride=2, device='meta').train(train)
    with torch.set_grad_enabled(train):
        y = conv(torch.empty(2, 4, 9, 9, device='meta'))
    assert y.device.type == 'meta' and y.shape == (2, 6, 4, 4)


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


@pytest.mark.parametrize('train', [True, False])
def test_autocast_runs_the_conv_as_torch_autocast_would(train):
    """ws_mm calls torch.convolution, which autocast does not cast: the layer
    casts the input, W_hat and the bias itself, to the same result."""
    torch.manual_seed(3)
    conv = ConvWS2d(8, 16, 3, padding=1).train(train)
    x = torch.randn(2, 8, 10, 10, requires_grad=train)
    with torch.autocast('cpu', dtype=torch.bfloat16), torch.set_grad_enabled(
            train):
        ours = conv(x)
        w_hat = conv._standardize(conv.weight)
        ref = F.conv2d(x, w_hat, conv.bias, padding=1)
    assert ours.dtype == ref.dtype == torch.bfloat16
    # The same bf16 kernel on the same bf16 operands: bit-equal.
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    if train:
        (g_ours, ) = torch.autograd.grad(ours.float().square().sum(),
                                         conv.weight)
        g_ref, g_hat = torch.autograd.grad(ref.float().square().sum(),
                                           (conv.weight, w_hat))
        # The bf16 conv backward may sum in another order between calls, so
        # its gradient for W_hat (g) may round to the neighbouring bf16
        # value: off by up to eps_bf16 * |g|. WS's backward, per filter
        # (g - mean(g) - W_hat <g, W_hat> / (n - 1)) / s, carries that over.
        rows = conv.weight.detach().double().flatten(1)
        std = rows.std(1, keepdim=True)
        w_hat = (rows - rows.mean(1, keepdim=True)).abs() / (std + 1e-5)
        g = g_hat.double().flatten(1).abs()
        terms = (g + g.mean(1, keepdim=True) +
                 w_hat * (g * w_hat).mean(1, keepdim=True)) / std
        bound = 2 * torch.finfo(torch.bfloat16).eps * terms
        error = (g_ours - g_ref).double().flatten(1).abs()
        assert (error <= bound).all(), (error / bound).max()
