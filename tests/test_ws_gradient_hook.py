"""WSGradientHook in a real mmengine Runner: what it logs, when, and that it
leaves nothing behind between logging iterations.

The model runs in float64 and trains (SGD at a rate that moves the weights,
so every step's gradients differ), so the logged gradient ratios can be
checked against plain autograd of the very steps logged, to float64
rounding.
"""

import devkit  # conftest.py loads it
import pytest
import torch
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

import ws_mm  # noqa: F401  (registers the hook)
from ws_mm.layers import ConvWS2d
from references import rounding_tol

BATCH = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)


class TinyNet(BaseModel):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = ConvWS2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(4, 8)
        self.conv2 = ConvWS2d(8, 4, 3, padding=1)
        self.double()

    def forward(self, x, mode='loss'):
        y = self.conv2(torch.relu(self.norm(self.conv1(x))))
        # conv2 is applied twice, as a shared head would be.
        y = y + self.conv2(torch.relu(self.norm(self.conv1(x * 0.5))))
        return dict(loss=y.square().mean())


class OneBatch(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return dict(x=BATCH[i])


LR = 0.01  # moves the weights, and so the gradients, at every step
STEPS, INTERVAL = 6, 3


def reference_run():
    """Plain SGD on TinyNet with W_hat written out and retained, in float64:
    per step, ||dL/dW|| / ||dL/dW_hat|| of that step's gradients, and the
    conv1 weight after that step's update."""
    net = TinyNet()
    w_hats = {}

    def standardized(conv):
        w = conv.weight
        rows = w.flatten(1)
        mean = rows.mean(1).view(-1, 1, 1, 1)
        std = rows.std(1).view(-1, 1, 1, 1)
        w_hat = (w - mean) / (std + 1e-5)
        w_hat.retain_grad()
        w_hats.setdefault(conv, []).append(w_hat)
        return w_hat

    for conv in (net.conv1, net.conv2):
        conv.forward = lambda x, conv=conv: F.conv2d(x, standardized(conv),
                                                     conv.bias, padding=1)
    steps = []
    for _ in range(STEPS):
        w_hats.clear()
        net.zero_grad()
        net(BATCH)['loss'].backward()
        ratios = {}
        for name, conv in (('conv1', net.conv1), ('conv2', net.conv2)):
            hat_sq = sum(float(w.grad.double().square().sum())
                         for w in w_hats[conv])
            ratios[name] = (float(conv.weight.grad.double().square().sum()) /
                            hat_sq)**0.5
        with torch.no_grad():
            for p in net.parameters():
                p -= LR * p.grad
        steps.append((ratios, net.conv1.weight.detach().clone()))
    return steps


class Watcher(Hook):
    """Whether gradient observers were on the WS layers during each
    iteration's backward: looked at after it, before WSGradientHook's
    after_train_iter removes them (a higher priority than its NORMAL)."""
    priority = 'ABOVE_NORMAL'

    def __init__(self):
        self.watched = []

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        convs = (runner.model.conv1, runner.model.conv2)
        self.watched.append([bool(c._w_hat_grad_hooks) or
                             bool(c.weight._backward_hooks) for c in convs])


def test_hook_logs_every_interval_and_matches_autograd(tmp_path):
    watcher = Watcher()
    runner = Runner(
        model=TinyNet(), work_dir=str(tmp_path),
        # Its own name: mmengine reuses a Visualizer (and its save_dir) by
        # name, and the default name is a timestamp another Runner may share.
        experiment_name=f'ws_gradient_hook_{tmp_path.name}',
        train_dataloader=dict(dataset=OneBatch(), batch_size=2,
                              sampler=dict(type='DefaultSampler',
                                           shuffle=False),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=STEPS),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=LR)),
        custom_hooks=[dict(type='WSGradientHook', interval=INTERVAL),
                      watcher],
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1)))
    runner.train()

    records = devkit.read_scalars(tmp_path)
    assert records
    logged = [r for r in records if 'ws/conv1/grad_ratio' in r]
    assert [r['step'] for r in logged] == [3, 6]
    assert not any(key.startswith('ws/') for r in records
                   if r['step'] not in (3, 6) for key in r)
    expected = reference_run()
    # The weights move: every step's ratios differ from the others', so
    # only the gradients of the logged step itself (not an earlier one's,
    # nor a sum over the steps since the last log) give the logged ratio.
    for a in range(STEPS):
        for b in range(a):
            assert expected[a][0]['conv1'] != pytest.approx(
                expected[b][0]['conv1'], rel=1e-3)
    for record in logged:
        ratios, weight = expected[record['step'] - 1]
        for name in ('conv1', 'conv2'):
            assert record[f'ws/{name}/grad_ratio'] == pytest.approx(
                ratios[name], rel=1e-10, abs=0), (record['step'], name)
        # The weight after that step's update. The hook takes its
        # statistics in float32: off by about eps * sqrt(n) * |w|
        # (rounding the weights, then summing n of them).
        atol = (rounding_tol(torch.float32, weight.numel()) *
                weight.abs().max().item())
        assert record['ws/conv1/weight_std'] == pytest.approx(
            float(weight.std()), rel=0, abs=atol)
        assert record['ws/conv1/weight_mean'] == pytest.approx(
            float(weight.mean()), rel=0, abs=atol)
    torch.testing.assert_close(runner.model.conv1.weight.detach(),
                               expected[-1][1], rtol=1e-10, atol=1e-12)

    log = next(tmp_path.glob('*/*.log')).read_text()
    assert log.count('WS ||dL/dW|| / ||dL/dW_hat|| over 2 layers') == 2
    # Nothing observes the gradients between logging iterations, nor after.
    assert watcher.watched == [[step % INTERVAL == 0] * 2
                               for step in range(1, STEPS + 1)]
    for conv in (runner.model.conv1, runner.model.conv2):
        assert not conv._w_hat_grad_hooks
        assert not conv.weight._backward_hooks
