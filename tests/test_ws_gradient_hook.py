"""WSGradientHook in a real mmengine Runner: what it logs, when, and that it
leaves nothing behind between logging iterations.

The model runs in float64, so the logged gradient ratios can be checked
against plain autograd to float64 rounding.
"""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

import ws_mm  # noqa: F401  (registers the hook)
from ws_mm.layers import ConvWS2d

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


def reference_ratios():
    """||dL/dW|| / ||dL/dW_hat|| from plain autograd with W_hat retained."""
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
    net(BATCH)['loss'].backward()
    ratios = {}
    for name, conv in (('conv1', net.conv1), ('conv2', net.conv2)):
        hat_sq = sum(float(w.grad.double().square().sum())
                     for w in w_hats[conv])
        ratios[name] = (float(conv.weight.grad.double().square().sum()) /
                        hat_sq)**0.5
    return ratios


def test_hook_logs_every_interval_and_matches_autograd(tmp_path):
    runner = Runner(
        model=TinyNet(), work_dir=str(tmp_path),
        # Its own name: mmengine reuses a Visualizer (and its save_dir) by
        # name, and the default name is a timestamp another Runner may share.
        experiment_name=f'ws_gradient_hook_{tmp_path.name}',
        train_dataloader=dict(dataset=OneBatch(), batch_size=2,
                              sampler=dict(type='DefaultSampler',
                                           shuffle=False),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=6),
        # lr 0: the weights, and so the gradients, are the same every step.
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.0)),
        custom_hooks=[dict(type='WSGradientHook', interval=3)],
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1)))
    runner.train()

    records = [json.loads(line) for line in
               next(tmp_path.glob('*/vis_data/scalars.json')).read_text()
               .splitlines()]
    logged = [r for r in records if 'ws/conv1/grad_ratio' in r]
    assert [r['step'] for r in logged] == [3, 6]
    expected = reference_ratios()
    for record in logged:
        for name in ('conv1', 'conv2'):
            assert record[f'ws/{name}/grad_ratio'] == pytest.approx(
                expected[name], rel=1e-10, abs=0)
        # The hook takes the weight's statistics in float32: off by about
        # eps * sqrt(n) * |w| (rounding the weights, then summing n of them).
        weight = runner.model.conv1.weight.detach()
        atol = (4 * torch.finfo(torch.float32).eps *
                math.sqrt(weight.numel()) * weight.abs().max().item())
        assert record['ws/conv1/weight_std'] == pytest.approx(
            float(weight.std()), rel=0, abs=atol)
        assert record['ws/conv1/weight_mean'] == pytest.approx(
            float(weight.mean()), rel=0, abs=atol)

    log = next(tmp_path.glob('*/*.log')).read_text()
    assert log.count('WS ||dL/dW|| / ||dL/dW_hat|| over 2 layers') == 2
    # Nothing observes the gradients between logging iterations.
    for conv in (runner.model.conv1, runner.model.conv2):
        assert not conv._w_hat_grad_hooks
        assert not conv.weight._backward_hooks
