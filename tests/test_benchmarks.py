"""The benchmark scripts run: the speed benchmark prints one ratio per
candidate and shape, the micro-batch study chains its phases.

No timing or quality is asserted (the machines are noisy, the runs reduced);
this keeps the scripts that produce the documented figures working.
"""
import re
import sys

import pytest
import torch


@pytest.mark.e2e
def test_layer_tables(tmp_path, run_tool, load_tool):
    bench = load_tool('benchmark_speed')
    out = tmp_path / 'tables.md'
    proc = run_tool([
        sys.executable, 'tools/benchmark_speed.py', '--only', 'conv',
        'kernel', 'norm',
        '--rounds', '2', '--min-seconds', '0.001', '--out', str(out)
    ])
    assert proc.returncode == 0, proc.stderr[-3000:]
    tables = dict(table.split('\n', 1)
                  for table in out.read_text().split('### ')[1:])
    saved = [line for line in tables.pop(
        'WS conv, memory kept from the forward for the backward').splitlines()
        if re.match(r'\| \d', line)]
    rows = [line for table in tables.values() for line in table.splitlines()
            if re.match(r'\| \d', line)]
    # the conv shapes in train and eval, WS's own work at their weights,
    # the norm shapes in train and eval
    conv, norm = len(bench.CONV_SHAPES), len(bench.NORM_SHAPES)
    assert len(rows) == 2 * conv + conv + 2 * norm
    for row in rows:
        cells = [c.strip() for c in row.strip('|').split('|')]
        # median of the per-round ratios (min-max)
        ratios = [re.fullmatch(r'([\d.]+)x \(([\d.]+)-([\d.]+)\)', c)
                  for c in cells[2:-1]]
        assert all(ratios), row
        ratios = [tuple(map(float, r.groups())) for r in ratios]
        # conv: mmcv, ws_mm at A, timm, ws_mm at C and the weight-traffic
        # floor against conv, then ws_mm at C against timm; kernel: ws_mm
        # at C and A against timm;
        # norm: BN, BCN x2 and BCN as two stages against GN
        expected = 6 if '->' in cells[0] else 2 if 'backward' in cells[1] \
            else 4
        assert len(ratios) == expected, row
        assert all(0 < low <= median <= high for median, low, high in ratios)
        assert cells[-1].endswith(' ms')
    # memory kept for the backward at the conv shapes: by the plain conv,
    # mmcv, ws_mm at A, timm, ws_mm at C, the floor; then the weight's size
    assert len(saved) == conv
    for row in saved:
        cells = [c.strip() for c in row.strip('|').split('|')]
        assert len(cells) == 8 and cells[1] == '0.0 KB', row
        assert cells[4] == cells[7], row  # timm keeps W_hat
        assert cells[3].endswith(' KB') and cells[5].endswith(' KB'), row


def test_ws_share_finds_ws_work_and_only_it(load_tool):
    import torch
    from mmengine.model import BaseModel

    from ws_mm.layers import ConvWS2d

    class Tiny(BaseModel):
        def __init__(self, conv):
            super().__init__()
            self.conv, self.norm = conv(8, 16, 3, padding=1), torch.nn.GroupNorm(
                4, 16)

        def forward(self, inputs, mode):
            return dict(loss=self.norm(self.conv(inputs)).square().mean())

    ws_share = load_tool('benchmark_speed').ws_share
    data = dict(inputs=torch.randn(2, 8, 32, 32))
    assert 0 < ws_share(Tiny(ConvWS2d), data) < 1
    assert ws_share(Tiny(torch.nn.Conv2d), data) == 0


def test_the_weight_traffic_floor_is_the_plain_conv_plus_copies(load_tool):
    """The conv table's floor column computes the plain conv (its traffic
    is timed against it), with W added to the weight's gradient."""
    floor_cls = load_tool('benchmark_speed').WeightTrafficConv
    torch.manual_seed(0)
    plain = torch.nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2,
                            groups=2).double()
    floor = floor_cls(4, 6, 3, stride=2, padding=2, dilation=2,
                      groups=2).double()
    floor.load_state_dict(plain.state_dict())
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    grads = []
    for conv in (plain, floor):
        xr = x.clone().requires_grad_()
        out = conv(xr)
        out.sin().sum().backward()
        grads.append((out, xr.grad, conv.weight.grad, conv.bias.grad))
    (out, gx, gw, gb), (f_out, f_gx, f_gw, f_gb) = grads
    torch.testing.assert_close(f_out, out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f_gx, gx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f_gw, gw + plain.weight, rtol=1e-12,
                               atol=1e-12)
    torch.testing.assert_close(f_gb, gb, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(floor.eval()(x), plain(x), rtol=0, atol=0)


def test_timms_std_conv_as_written_out_is_variant_c(load_tool):
    """The conv table's timm column computes what ws_mm's variant C does:
    the output and gradients of a conv with the float64 formula's W_hat."""
    from references import reference_ws
    torch.manual_seed(0)
    timm = load_tool('benchmark_speed').TimmStdConv2d(4, 6, 3,
                                                       padding=1).double()
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64, requires_grad=True)
    wrt = (x, timm.weight, timm.bias)
    out = timm(x)
    ref = torch.nn.functional.conv2d(x, reference_ws(timm.weight, 'C'),
                                     timm.bias, padding=1)
    results = [(y, *torch.autograd.grad(y.sin().sum(), wrt))
               for y in (out, ref)]
    for ours, expected in zip(*results):
        torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)


def test_saved_bytes_is_what_autograd_keeps_beyond_input_and_weights(
        load_tool):
    """The conv table's memory: 0 for a plain conv, ws_mm's three
    per-filter statistics, timm's W_hat (and batch norm's two per-filter
    statistics), mmcv's W_hat and more."""
    bench = load_tool('benchmark_speed')
    layers, x = bench.conv_layers((1, 8, 16, 3, 5, 5))
    kept = {name: bench.saved_bytes(layer.train(), x)
            for name, layer in layers.items()}
    weight, stats = 16 * 8 * 3 * 3 * 4, 16 * 4
    assert kept['conv'] == 0
    assert kept['ws_mm ConvWS2d'] == kept['ws_mm ConvWS2d C'] == 3 * stats
    assert kept['timm StdConv2d'] == weight + 2 * stats
    assert kept['mmcv ConvWS2d'] > 2 * weight


@pytest.mark.e2e
@pytest.mark.dist
def test_microbatch_study_two_phases(tmp_path, demo_data, run_tool):
    """One two-phase row, reduced: BCN+WS at 8 images with batch
    statistics, then at 1 image per process on 2 processes with estimates
    that continue from phase 1's statistics, then tested recalibrated."""
    work, out = tmp_path / 'work', tmp_path / 'microbatch'
    row = 'BCN+WS batch -> estimate, recalibrated'
    proc = run_tool([
        sys.executable, 'tools/benchmark_microbatch.py', '--seeds', '0',
        '--images', '16', '--rows', row, '--recalibration-batches', '3',
        '--data', str(demo_data.root), *demo_data.args[2:],
        '--work-dir', str(work), '--out', str(out)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    def estimates(run):
        checkpoint = (work / run / 'last_checkpoint').read_text().strip()
        state = torch.load(checkpoint, weights_only=False)['state_dict']
        return {k: int(v) for k, v in state.items()
                if k.endswith('pbn.num_batches_tracked')}
    phase1 = estimates('phase1_BCN+WS_s0')
    phase2 = estimates('phase2_BCN+WS_batch_estimate_s0')
    # Phase 1: 2 steps of 8 images; phase 2: 8 steps of 1 image on each of
    # 2 processes, every update continuing the count loaded from phase 1.
    assert phase1 and set(phase1.values()) == {2}
    assert phase2.keys() == phase1.keys() and set(phase2.values()) == {10}
    log = next((work / 'phase2_BCN+WS_batch_estimate_s0_recalibrated')
               .glob('*/*.log')).read_text()
    assert re.search(r'recalibrated the statistics of \d+ normalization '
                     r'layers over 3 training batches', log)

    table = out.with_suffix('.md').read_text()
    cells = next(line for line in table.splitlines()
                 if line.startswith(f'| {row} |')).strip('| ').split(' | ')
    # phase 1 and phase 2: mean and spread (one seed), then the seed count
    assert all(re.fullmatch(r'\d+\.\d\d', c) for c in cells[1::2][:2])
    assert cells[-1] == '1'
    assert out.with_suffix('.png').stat().st_size > 0
