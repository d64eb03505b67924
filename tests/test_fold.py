"""Folding WS convs into plain convs: same outputs, no ws_mm left, ONNX export
with standard operators only."""
import copy
import io
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ws_mm import fold_weight_standardization
from ws_mm.layers import WS_CONVS, ConvTransposeWS2d, ConvWS2d


def small_net():
    return nn.Sequential(
        ConvWS2d(3, 8, 3, padding=1, variant='A'), nn.GroupNorm(4, 8),
        nn.ReLU(), ConvWS2d(8, 8, 3, padding=1, groups=2, variant='C'),
        nn.GroupNorm(4, 8), nn.ReLU(),
        ConvTransposeWS2d(8, 4, 2, stride=2, variant='B'))


def test_fold_keeps_outputs_and_removes_ws():
    torch.manual_seed(0)
    # float64: folding stores the W_hat the layer computes, so the outputs
    # are the same computation, equal but for float64 rounding.
    net = small_net().double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        expected = net(x)
    keys = set(net.state_dict())
    weight_param = net[0].weight
    folded = fold_weight_standardization(net)
    assert folded is net
    assert not any(isinstance(m, WS_CONVS) for m in net.modules())
    assert type(net[0]) is nn.Conv2d and type(net[6]) is nn.ConvTranspose2d
    assert net[0].weight is weight_param  # same Parameter, new values
    assert set(net.state_dict()) == keys
    with torch.no_grad():
        torch.testing.assert_close(net(x), expected, rtol=1e-12, atol=1e-12)


def test_fold_a_real_backbone():
    from mmdet.models.backbones import ResNet
    torch.manual_seed(0)
    net = ResNet(depth=18, conv_cfg=dict(type='ConvWS'),
                 norm_cfg=dict(type='GN', num_groups=16), init_cfg=None)
    net.double()
    net.eval()  # mmdet's ResNet.train() returns None: no chaining
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        expected = net(x)
        fold_weight_standardization(net)
        for a, b in zip(net(x), expected):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_folded_model_exports_to_onnx_with_standard_ops_only():
    onnx = pytest.importorskip('onnx')
    torch.manual_seed(0)
    net = fold_weight_standardization(small_net().eval())
    buf = io.BytesIO()
    torch.onnx.export(net, (torch.randn(1, 3, 16, 16), ), buf, dynamo=False)
    model = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(model)
    domains = {node.domain for node in model.graph.node}
    assert domains <= {'', 'ai.onnx'}, domains
    assert {'Conv', 'ConvTranspose'} <= {n.op_type for n in model.graph.node}


@pytest.mark.e2e
def test_fold_tool_writes_a_config_and_checkpoint_without_ws(tmp_path,
                                                             run_tool):
    """tools/fold_ws.py on the demo segmenter: the folded pair, built by the
    toolbox alone, computes what the WS model computes."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    root = Path(__file__).resolve().parents[1]
    config = root / ('configs/demo/deeplabv3_r18-d16_gn-ws-all_1xb2-500it_'
                     'demo-voc-256x256.py')
    cfg = Config.fromfile(config)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.eval()
    checkpoint = tmp_path / 'model.pth'
    torch.save({'state_dict': model.state_dict()}, checkpoint)

    proc = run_tool([sys.executable, 'tools/fold_ws.py', str(config),
                     str(checkpoint), str(tmp_path / 'out')])
    assert proc.returncode == 0, proc.stderr[-3000:]
    folded_cfg = Config.fromfile(tmp_path / 'out' / f'{config.stem}_folded.py')
    assert 'ConvWS' not in folded_cfg.pretty_text
    folded = MODELS.build(folded_cfg.model)
    assert not any(isinstance(m, WS_CONVS) for m in folded.modules())
    state = torch.load(tmp_path / 'out' / f'{config.stem}_folded.pth')
    folded.load_state_dict(state['state_dict'], strict=True)
    folded.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = model.extract_feat(x)[-1]
        exact = copy.deepcopy(model).double().extract_feat(x.double())[-1]
        folded_out = folded.extract_feat(x)[-1]
    # The tool computed W_hat in float32 in its own process (its reductions
    # may round differently): the folded features may differ from ours by
    # float32 rounding through the network, whose size is that of our own
    # float32 error against float64. A wrong layer or weight is O(1) off.
    atol = 4 * (ours.double() - exact).abs().max().item()
    torch.testing.assert_close(folded_out, ours, rtol=0, atol=atol)


@pytest.mark.parametrize('ws_type', ['ConvWS', *(c.__name__ for c in WS_CONVS)])
def test_folded_config_builds_the_plain_conv_of_each_ws_type(ws_type):
    from mmcv.cnn import build_conv_layer

    from ws_mm.toolbox.switch import fold_conv_cfgs
    cfg = dict(model=dict(backbone=dict(conv_cfg=dict(
        type=ws_type, variant='B', eps=1e-3)), stages=[dict(conv_cfg=None)]))
    folded = fold_conv_cfgs(cfg)
    conv_cfg = folded['model']['backbone']['conv_cfg']
    assert set(conv_cfg) == {'type'}  # WS's arguments dropped
    assert folded['model']['stages'] == [dict(conv_cfg=None)]
    ws = build_conv_layer(cfg['model']['backbone']['conv_cfg'], 4, 4, 3)
    plain = build_conv_layer(conv_cfg, 4, 4, 3)
    # mmcv registers its wrappers (empty-input safe) under some plain names
    assert isinstance(plain, type(ws).plain) and not isinstance(plain, WS_CONVS)
    assert plain.state_dict().keys() == ws.state_dict().keys()
    assert cfg['model']['backbone']['conv_cfg']['type'] == ws_type  # a copy
