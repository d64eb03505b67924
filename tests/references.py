"""The float64 references of the tests, and the rounding they allow: one of
each, shared by the CPU tests and the GPU tests (tests/test_gpu.py).

Written from the formulas of arXiv:1903.10520 (and the WS variants' own
definitions), not from the code under test. tests/conftest.py registers this
file as the module ``references`` (``import references``): under pytest's
importlib mode tests/ is not on sys.path, and mmsegmentation installs a
top-level package named ``tests``.
"""
import math

import torch

# ------------------------------------------------------------------ rounding


def rel_error(result, reference):
    """Normwise error ``max|result - reference| / max|reference|``, in
    float64."""
    reference = reference.double()
    return ((result.double() - reference).abs().max() /
            reference.abs().max()).item()


def rounding_tol(dtype, n):
    """Error allowed, relative to the terms' magnitudes, for results that
    are sums of up to ``n`` rounded terms: about eps * sqrt(n) (rounding
    errors of random sign add up like a random walk), with a margin of 4."""
    return 4 * torch.finfo(dtype).eps * math.sqrt(n)


# ------------------------------------------------------------------------ WS
# (unbiased, eps inside sqrt, default eps), spelled out again on purpose.
REFERENCE_VARIANTS = {
    'A': (True, False, 1e-5),
    'B': (True, True, 1e-5),
    'C': (False, True, 1e-6),
}


def reference_ws(weight, variant, eps=None):
    """W_hat per output filter, written from the formulas in float64."""
    unbiased, eps_in_sqrt, default_eps = REFERENCE_VARIANTS[variant]
    eps = default_eps if eps is None else eps
    rows = weight.double().reshape(weight.shape[0], -1)
    n = rows.shape[1]
    mu = rows.sum(1, keepdim=True) / n
    sq = ((rows - mu)**2).sum(1, keepdim=True) / (n - 1 if unbiased else n)
    s = torch.sqrt(sq + eps) if eps_in_sqrt else torch.sqrt(sq) + eps
    return ((rows - mu) / s).reshape(weight.shape)


def reference_ws_conv(weight, variant, eps=None, transposed=False, groups=1):
    """:func:`reference_ws` of any conv's weight, in float64. A transposed
    conv stores ``(in, out / groups, *k)``: the filter of its output channel
    ``o`` in group ``g`` is ``weight[g-th block of inputs, o]``."""
    if not transposed:
        return reference_ws(weight, variant, eps)
    cin, cout_g, *kernel = weight.shape
    blocks = (groups, cin // groups, cout_g, *kernel)
    filters = weight.reshape(blocks).transpose(1, 2)  # (g, out / g, in / g)
    w_hat = reference_ws(filters.reshape(groups * cout_g, cin // groups,
                                         *kernel), variant, eps)
    return (w_hat.reshape(groups, cout_g, cin // groups, *kernel)
            .transpose(1, 2).reshape(weight.shape))


# ----------------------------------------------------------------------- BCN
BCN_EPS = 1e-5


def _channel_shape(x):
    return [1, x.size(1)] + [1] * (x.dim() - 2)


def ref_channel_stats(x):
    """Per-channel mean and biased variance over all dims but 1."""
    dims = [0, *range(2, x.dim())]
    mean = x.mean(dims)
    var = ((x - mean.view(_channel_shape(x))) ** 2).mean(dims)
    return mean, var


def ref_bcn(x, mean, var, pbn_weight, pbn_bias, group_weight, group_bias,
            num_groups, eps=BCN_EPS):
    """pbn: (x - m) / sqrt(v + eps) * w + b per channel; then group norm of
    each sample with biased variance, eps inside sqrt, per-group affine."""
    shape = _channel_shape(x)
    y = ((x - mean.view(shape)) / torch.sqrt(var.view(shape) + eps)
         * pbn_weight.view(shape) + pbn_bias.view(shape))
    g = y.reshape(x.size(0), num_groups, -1)
    g_mean = g.mean(-1, keepdim=True)
    g_var = ((g - g_mean) ** 2).mean(-1, keepdim=True)
    z = (g - g_mean) / torch.sqrt(g_var + eps) * group_weight + group_bias
    return z.reshape(x.shape)


def ref_bcn_batch_mode(x, bcn, eps=BCN_EPS):
    """:func:`ref_bcn` in float64 with the batch's own statistics and the
    affine parameters and groups of the layer ``bcn`` (a
    ``BatchChannelNorm``): what it computes in batch mode in training. The
    eps is the formula's, not read from the layer."""
    x = x.double()
    pbn = bcn.pbn
    return ref_bcn(x, *ref_channel_stats(x), pbn.weight.double(),
                   pbn.bias.double(), bcn.weight.double(), bcn.bias.double(),
                   bcn.num_groups, eps)


class RefBCN:
    """The official two-stage BCN arithmetic in float64, stepped like a
    ``BatchChannelNorm`` (whose parameters and state it starts from).

    The first stage is the authors' BatchNorm (``mode='batch'``: batch
    statistics in training, the running ones updated with the unbiased
    variance, as ``nn.BatchNorm2d``) or their estimated BN (``'estimate'``:
    the estimates updated first, from the batch mean and the second moment
    around the running mean, at ws_mm's rate ``max(momentum, 1 / (t + 1))``,
    then used as constants); the second is :func:`ref_bcn`'s group norm.
    Gradients come from autograd through these formulas.
    """

    def __init__(self, bcn):
        self.mode, self.num_groups = bcn.mode, bcn.num_groups
        self.momentum = bcn.pbn.momentum
        self.params = {name: p.detach().double().clone().requires_grad_()
                       for name, p in bcn.named_parameters()}
        self.state = {name: b.detach().clone()
                      for name, b in bcn.pbn.named_buffers()
                      if name != 'num_nonfinite_batches'}

    def __call__(self, x, training, stats_of=None):
        """The output for ``x``; in training the statistics are updated
        first from ``stats_of`` (default ``x``; the data of all ranks)."""
        state, p = self.state, self.params
        mean, var = state['running_mean'], state['running_var']
        if training:
            t = int(state['num_batches_tracked'])
            batch_mean, batch_var = ref_channel_stats(
                x if stats_of is None else stats_of)
            if self.mode == 'batch':
                n = x.numel() // x.size(1)
                rate = 1 / (t + 1) if self.momentum is None else self.momentum
                state['running_mean'] = ((1 - rate) * mean +
                                         rate * batch_mean.detach())
                state['running_var'] = ((1 - rate) * var + rate *
                                        batch_var.detach() * n / (n - 1))
                mean, var = batch_mean, batch_var
            else:
                batch_mean, batch_var = batch_mean.detach(), batch_var.detach()
                rate = 1 / (t + 1)
                if self.momentum is not None:
                    rate = max(self.momentum, rate)
                if t:
                    batch_var = batch_var + (batch_mean - mean)**2
                mean = state['running_mean'] = (1 - rate) * mean + rate * batch_mean
                var = state['running_var'] = (1 - rate) * var + rate * batch_var
            state['num_batches_tracked'] = state['num_batches_tracked'] + 1
        return ref_bcn(x, mean, var, p['pbn.weight'], p['pbn.bias'],
                       p['weight'], p['bias'], self.num_groups)
