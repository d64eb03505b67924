"""The authors' ImageNet GN+WS / BCN+WS ResNets in mmdet's and mmseg's layout.

The authors' code (joe-siyuan-qiao/WeightStandardization and
/Batch-Channel-Normalization) saves torchvision ResNet names, usually behind a
``module.`` prefix, with GroupNorm (GN+WS) or BCN (BCN+WS: ``bn*.pbn.*`` for
the per-channel stage, ``bn*.weight`` / ``bn*.bias`` of shape (1, 32, 1) for
the group affine) in every ``bn*`` slot. mmdet's and mmseg's ``ResNet`` (v1b
stem) have the same layout in both toolboxes: the norm slots are named after
the layer's ``_abbr_`` (``gn1`` / ``bcn1``, ``layer1.0.gn2``, ...), and there
is no classifier.

The norm is detected from the keys (``pbn`` means BCN). The authors' BCN+WS
models standardize with WS variant 'B', the GN+WS (JHU) ones with 'A'.
"""
import re
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Tuple

from torch import Tensor

NORM_SLOT = re.compile(r'^(?P<block>(layer\d+\.\d+\.)?)bn(?P<index>\d+)\.')


class Conversion(NamedTuple):
    state_dict: 'OrderedDict[str, Tensor]'
    norm: str             # 'gn' or 'bcn'
    dropped: List[str]    # the classifier's keys
    unplaced: List[str]   # converted keys the ResNet does not have
    missing: List[str]    # ResNet keys the source does not have
    bad_shapes: List[Tuple[str, tuple, tuple]]  # key, source's, ResNet's

    @property
    def complete(self) -> bool:
        return not (self.unplaced or self.missing or self.bad_shapes)


def detect_norm(state_dict: Dict[str, Tensor]) -> str:
    return 'bcn' if any('.pbn.' in key for key in state_dict) else 'gn'


def rename(state_dict: Dict[str, Tensor], abbr: str):
    """The authors' keys renamed; returns (renamed, dropped keys)."""
    renamed, dropped = OrderedDict(), []
    for key, value in state_dict.items():
        key = key[len('module.'):] if key.startswith('module.') else key
        if key.startswith('fc.'):
            dropped.append(key)
            continue
        key = NORM_SLOT.sub(lambda m: f'{m["block"]}{abbr}{m["index"]}.', key)
        renamed[key] = value
    return renamed, dropped


def resnet_state_dict(depth: int, norm: str) -> Dict[str, Tensor]:
    """Keys and shapes of the mmdet/mmseg ResNet the configs build."""
    from mmdet.models.backbones import ResNet

    from . import registry  # noqa: F401  (ConvWS and BCN)
    norm_cfg = dict(type='BCN' if norm == 'bcn' else 'GN', num_groups=32)
    return ResNet(depth=depth, conv_cfg=dict(type='ConvWS'),
                  norm_cfg=norm_cfg, init_cfg=None).state_dict()


def convert_authors_resnet(state_dict: Dict[str, Tensor],
                           depth: int) -> Conversion:
    """The authors' ResNet-``depth`` weights renamed for mmdet/mmseg, with
    every key that could not be placed, is missing, or has the wrong shape."""
    norm = detect_norm(state_dict)
    renamed, dropped = rename(state_dict, abbr=norm)
    expected = resnet_state_dict(depth, norm)
    return Conversion(
        renamed, norm, dropped,
        unplaced=[k for k in renamed if k not in expected],
        missing=[k for k in expected if k not in renamed],
        bad_shapes=[(k, tuple(renamed[k].shape), tuple(expected[k].shape))
                    for k in renamed
                    if k in expected and renamed[k].shape != expected[k].shape])
