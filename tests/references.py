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


# ------------------------------------------------------ the authors' ResNet
# Their ImageNet ResNet as their code builds it (torchvision's Bottleneck:
# conv1/bn1/conv2/bn2/conv3/bn3/downsample, stride on the 3x3; WS by
# :func:`reference_ws`; BCN as their ``layers.py``: a BatchNorm2d ``pbn``,
# then GroupNorm without affine, then a (1, groups, 1) affine), for the
# checkpoint tests: their state-dict keys and their numbers.
class AuthorsConv2d(torch.nn.Conv2d):
    """A bias-free conv; with a ``variant``, weight-standardized."""

    def __init__(self, *args, variant=None, **kwargs):
        super().__init__(*args, bias=False, **kwargs)
        self.variant = variant

    def forward(self, x):
        weight = self.weight
        if self.variant:
            weight = reference_ws(weight, self.variant).to(weight.dtype)
        return torch.nn.functional.conv2d(x, weight, None, self.stride,
                                          self.padding)


class AuthorsBCN(torch.nn.Module):
    def __init__(self, channels, groups=32):
        super().__init__()
        self.groups = groups
        self.pbn = torch.nn.BatchNorm2d(channels)
        self.weight = torch.nn.Parameter(torch.ones(1, groups, 1))
        self.bias = torch.nn.Parameter(torch.zeros(1, groups, 1))

    def forward(self, x):
        n, c, h, w = x.shape
        out = self.pbn(x).reshape(1, n * self.groups, -1)
        out = torch.nn.functional.batch_norm(out, None, None, training=True,
                                             eps=BCN_EPS)
        out = out.reshape(n, self.groups, -1) * self.weight + self.bias
        return out.reshape(n, c, h, w)


def authors_norm(kind, channels):
    if kind == 'bcn':
        return AuthorsBCN(channels)
    if kind == 'bn':  # torchvision's own ResNet
        return torch.nn.BatchNorm2d(channels)
    return torch.nn.GroupNorm(32, channels)


class AuthorsBottleneck(torch.nn.Module):
    def __init__(self, cin, width, stride, kind, variant):
        super().__init__()
        cout = width * 4
        self.conv1 = AuthorsConv2d(cin, width, 1, variant=variant)
        self.bn1 = authors_norm(kind, width)
        self.conv2 = AuthorsConv2d(width, width, 3, stride, 1,
                                   variant=variant)
        self.bn2 = authors_norm(kind, width)
        self.conv3 = AuthorsConv2d(width, cout, 1, variant=variant)
        self.bn3 = authors_norm(kind, cout)
        self.relu = torch.nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = torch.nn.Sequential(
                AuthorsConv2d(cin, cout, 1, stride, variant=variant),
                authors_norm(kind, cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


AUTHORS_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class AuthorsResNet(torch.nn.Module):
    """``kind`` 'gn', 'bcn' or 'bn'; ``variant`` of WS, or None."""

    def __init__(self, kind, variant, depth=50, num_classes=1000):
        super().__init__()
        self.conv1 = AuthorsConv2d(3, 64, 7, 2, 3, variant=variant)
        self.bn1 = authors_norm(kind, 64)
        self.relu = torch.nn.ReLU()
        self.maxpool = torch.nn.MaxPool2d(3, 2, 1)
        cin, layers = 64, []
        for i, (blocks, width) in enumerate(zip(AUTHORS_BLOCKS[depth],
                                                (64, 128, 256, 512))):
            stage = []
            for b in range(blocks):
                stride = 2 if b == 0 and i > 0 else 1
                stage.append(AuthorsBottleneck(cin, width, stride, kind,
                                               variant))
                cin = width * 4
            layers.append(torch.nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = torch.nn.Linear(2048, num_classes)

    def features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            outs.append(x)
        return outs

    def forward(self, x):
        """The logits."""
        return self.fc(self.features(x)[-1].mean((2, 3)))


def randomize(model):
    """Non-trivial values in every parameter, estimate and counter."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith('num_batches_tracked'):
                tensor.fill_(450450)
            elif tensor.is_floating_point():
                if name.endswith('running_var'):
                    tensor.copy_(torch.rand(tensor.shape, generator=g) + 0.5)
                else:
                    tensor.copy_(torch.randn(tensor.shape, generator=g) * 0.1
                                 + (1.0 if name.endswith('weight')
                                    and tensor.dim() < 4 else 0.0))
