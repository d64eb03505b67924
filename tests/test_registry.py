"""ws_mm's layers resolve through mmcv's builders in every scope, and its
ConvWS is a true drop-in for mmcv's."""

import pytest
import torch
import torch.nn.functional as F
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmcv.cnn.bricks.conv_ws import ConvWS2d as MMCVConvWS2d
from mmengine.registry import MODELS, DefaultScope

import ws_mm
from ws_mm.layers import (BatchChannelNorm, ConvTransposeWS2d, ConvWS1d,
                          ConvWS2d, ConvWS3d)
from references import rounding_tol

CONVS = {
    'ConvWS': ConvWS2d,
    'ConvWS1d': ConvWS1d,
    'ConvWS2d': ConvWS2d,
    'ConvWS3d': ConvWS3d,
    'ConvTransposeWS2d': ConvTransposeWS2d,
}


@pytest.fixture(params=[None, 'mmdet', 'mmseg'])
def scope(request):
    if request.param is None:
        yield None
        return
    # Importing the toolbox registers its scope's registries.
    __import__(f'{request.param}.registry')
    with DefaultScope.overwrite_default_scope(request.param):
        yield request.param


@pytest.mark.parametrize('name', sorted(CONVS))
def test_convs_build_in_every_scope(scope, name):
    layer = build_conv_layer(dict(type=name), 8, 16, 3)
    assert type(layer) is CONVS[name]


def test_bcn_builds_in_every_scope(scope):
    abbr, layer = build_norm_layer(dict(type='BCN', num_groups=8), 32,
                                   postfix=1)
    assert type(layer) is BatchChannelNorm
    assert abbr == 'bcn1'
    assert layer.weight.shape == (1, 8, 1)


def test_build_norm_layer_contract_requires_grad_and_eps():
    _, layer = build_norm_layer(
        dict(type='BCN', num_groups=4, requires_grad=False, eps=1e-3), 16)
    assert not any(p.requires_grad for p in layer.parameters())
    assert layer.eps == 1e-3


def test_config_typo_is_a_clear_error_at_build():
    with pytest.raises(KeyError):
        build_conv_layer(dict(type='ConvWSS'), 8, 16, 3)
    with pytest.raises(ValueError, match="variant 'X'"):
        build_conv_layer(dict(type='ConvWS', variant='X'), 8, 16, 3)


def test_root_registry_holds_ws_mm_classes():
    assert MODELS.get('ConvWS') is ws_mm.ConvWS2d
    assert MODELS.get('BCN') is ws_mm.BatchChannelNorm


def test_drop_in_for_mmcv_convws_on_a_real_backbone():
    """An mmdet ResNet built with mmcv's ConvWS2d and one built with ws_mm's
    from the same config exchange state dicts strictly, same outputs."""
    from mmdet.models.backbones import ResNet
    cfg = dict(depth=18, norm_cfg=dict(type='GN', num_groups=16),
               norm_eval=False, init_cfg=None)
    torch.manual_seed(0)
    # A class as type: mmcv builds it without registering it anywhere.
    theirs = ResNet(conv_cfg=dict(type=MMCVConvWS2d), **cfg)
    ours = ResNet(conv_cfg=dict(type='ConvWS'), **cfg)
    theirs.eval()  # mmdet's ResNet.train() returns None: no chaining
    ours.eval()
    assert isinstance(ours.conv1, ConvWS2d)
    assert type(theirs.conv1) is MMCVConvWS2d

    ours.load_state_dict(theirs.state_dict(), strict=True)
    # float64: the same formula computed in another order agrees to float64
    # rounding (~1e-15 relative, a little more after 18 layers); another
    # eps, eps placement or variance divisor is >1e-5 relative off.
    theirs.double()
    ours.double()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours.conv1(x), theirs.conv1(x),
                                   rtol=1e-10, atol=1e-10)
        for a, b in zip(theirs(x), ours(x)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    theirs.load_state_dict(ours.state_dict(), strict=True)


def test_mmcv_positional_arguments_including_eps():
    torch.manual_seed(0)
    theirs = MMCVConvWS2d(4, 8, 3, 1, 1, 1, 1, True, 1e-3)
    ours = ConvWS2d(4, 8, 3, 1, 1, 1, 1, True, 1e-3)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        ours32, theirs32 = ours(x), theirs(x)
        # Exactness in float64: equal to float64 rounding. With eps 1e-3
        # ignored, inside the sqrt or the biased variance, W_hat (filter std
        # ~0.1) is 1-4 % off.
        torch.testing.assert_close(ours.double()(x.double()),
                                   theirs.double()(x.double()), rtol=1e-12,
                                   atol=1e-12)
        # float32: each output sums fan_in products x * W_hat (W_hat itself
        # rounded after sums over fan_in weights), so it is off by about
        # eps * sqrt(fan_in) * the sum of the products' magnitudes.
        fan_in = ours.weight[0].numel()
        w_hat = ours.standardized_weight()  # float64 by now
        magnitude = F.conv2d(x.double().abs(), w_hat.abs(), ours.bias.abs(),
                             padding=1)
        atol = rounding_tol(torch.float32, fan_in) * magnitude.max().item()
        torch.testing.assert_close(ours32, theirs32, rtol=0, atol=atol)
