"""tools/convert_pretrained.py on checkpoints written in the authors' layout.

The authors' ResNet is rebuilt here the way their code builds it
(torchvision's Bottleneck: conv1/bn1/conv2/bn2/conv3/bn3/downsample, stride on
the 3x3, every module behind DataParallel's ``module.``), so the test checks
names AND numbers: after conversion mmdet's ResNet computes the same features.
"""
import pytest
import torch
from mmdet.models.backbones import ResNet
from torch import nn

from ws_mm.layers import BatchChannelNorm, ConvWS2d


@pytest.fixture(scope='module')
def convert_pretrained(load_tool):
    return load_tool('convert_pretrained')


def authors_norm(kind, channels):
    if kind == 'bcn':
        return BatchChannelNorm(channels, 32, mode='estimate')
    return nn.GroupNorm(32, channels)


class AuthorsBottleneck(nn.Module):
    def __init__(self, cin, width, stride, kind, variant):
        super().__init__()
        cout = width * 4
        self.conv1 = ConvWS2d(cin, width, 1, bias=False, variant=variant)
        self.bn1 = authors_norm(kind, width)
        self.conv2 = ConvWS2d(width, width, 3, stride, 1, bias=False,
                              variant=variant)
        self.bn2 = authors_norm(kind, width)
        self.conv3 = ConvWS2d(width, cout, 1, bias=False, variant=variant)
        self.bn3 = authors_norm(kind, cout)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                ConvWS2d(cin, cout, 1, stride, bias=False, variant=variant),
                authors_norm(kind, cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class AuthorsResNet50(nn.Module):
    def __init__(self, kind, variant):
        super().__init__()
        self.conv1 = ConvWS2d(3, 64, 7, 2, 3, bias=False, variant=variant)
        self.bn1 = authors_norm(kind, 64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, layers = 64, []
        for i, (blocks, width) in enumerate(zip((3, 4, 6, 3),
                                                (64, 128, 256, 512))):
            stage = []
            for b in range(blocks):
                stride = 2 if b == 0 and i > 0 else 1
                stage.append(AuthorsBottleneck(cin, width, stride, kind,
                                               variant))
                cin = width * 4
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(2048, 1000)

    def features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            outs.append(x)
        return outs


def randomize(model):
    """Non-trivial values in every parameter and estimate."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                if name.endswith('running_var'):
                    tensor.copy_(torch.rand(tensor.shape, generator=g) + 0.5)
                else:
                    tensor.copy_(torch.randn(tensor.shape, generator=g) * 0.1
                                 + (1.0 if name.endswith('weight')
                                    and tensor.dim() < 4 else 0.0))


@pytest.mark.parametrize('kind,variant', [('bcn', 'B'), ('gn', 'A')])
def test_converted_checkpoint_reproduces_the_authors_features(
        tmp_path, convert_pretrained, kind, variant):
    authors = AuthorsResNet50(kind, variant)
    randomize(authors)
    authors.eval()
    src = tmp_path / 'authors.pth'
    state = {f'module.{k}': v for k, v in authors.state_dict().items()}
    if kind == 'bcn':
        assert 'module.layer1.0.bn1.pbn.running_mean' in state
        assert state['module.bn1.weight'].shape == (1, 32, 1)
    torch.save({'state_dict': state, 'epoch': 90}, src)

    dst = tmp_path / 'converted.pth'
    assert convert_pretrained.main([str(src), str(dst)]) == 0

    norm_cfg = (dict(type='BCN', num_groups=32) if kind == 'bcn' else
                dict(type='GN', num_groups=32))
    backbone = ResNet(depth=50, conv_cfg=dict(type='ConvWS', variant=variant),
                      norm_cfg=norm_cfg, norm_eval=False, init_cfg=None)
    backbone.load_state_dict(torch.load(dst)['state_dict'], strict=True)
    backbone.eval()
    # float64 (the float32 values upcast exactly): the same computation on
    # the same numbers, so a tolerance far below any misplaced tensor's
    # effect and far above float64 rounding.
    authors.double()
    backbone.double()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        for ours, theirs in zip(backbone(x), authors.features(x)):
            torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


def test_keys_that_cannot_be_placed_are_reported(tmp_path, capsys,
                                                 convert_pretrained):
    authors = AuthorsResNet50('gn', 'A')
    state = {f'module.{k}': v for k, v in authors.state_dict().items()}
    state['module.layer1.0.bn1.estbn_moving_speed'] = torch.zeros(1)
    del state['module.layer4.2.conv3.weight']
    src, dst = tmp_path / 'authors.pth', tmp_path / 'out.pth'
    torch.save(state, src)
    assert convert_pretrained.main([str(src), str(dst)]) == 1
    out = capsys.readouterr().out
    assert 'could not place: layer1.0.gn1.estbn_moving_speed' in out
    assert 'missing in source: layer4.2.conv3.weight' in out
    assert not dst.exists()
