"""The speed benchmark runs and prints one ratio per candidate and shape.

No timing is asserted (the machines are noisy); this only keeps the script
that produces the documented figures working.
"""
import re
import sys

import pytest


@pytest.mark.e2e
def test_layer_tables(tmp_path, run_tool):
    out = tmp_path / 'tables.md'
    proc = run_tool([
        sys.executable, 'tools/benchmark_speed.py', '--only', 'conv',
        'kernel', 'norm',
        '--rounds', '2', '--min-seconds', '0.001', '--out', str(out)
    ])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in out.read_text().splitlines()
            if re.match(r'\| \d', line)]
    # 5 conv shapes in train and eval, WS's own work at their 5 weights,
    # 3 norm shapes in train and eval
    assert len(rows) == 2 * 5 + 5 + 2 * 3
    for row in rows:
        cells = [c.strip() for c in row.strip('|').split('|')]
        # median of the per-round ratios (min-max)
        ratios = [re.fullmatch(r'([\d.]+)x \(([\d.]+)-([\d.]+)\)', c)
                  for c in cells[2:-1]]
        assert all(ratios), row
        ratios = [tuple(map(float, r.groups())) for r in ratios]
        # conv: mmcv and ws_mm against conv; kernel: compiled always and
        # auto against never; norm: BN, BCN x2 against GN
        expected = 2 if '->' in cells[0] or 'backward' in cells[1] else 3
        assert len(ratios) == expected, row
        assert all(0 < low <= median <= high for median, low, high in ratios)
        assert cells[-1].endswith(' ms')


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
