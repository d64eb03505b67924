"""The authors' ImageNet GN+WS / BCN+WS ResNets in mmdet's and mmseg's layout.

The authors' code (joe-siyuan-qiao/WeightStandardization and
/Batch-Channel-Normalization) saves torchvision ResNet names, usually behind a
``module.`` prefix, with GroupNorm (GN+WS) or BCN (BCN+WS: ``bn*.pbn.*`` for
the per-channel stage, ``bn*.weight`` / ``bn*.bias`` of shape (1, 32, 1) for
the group affine) in every ``bn*`` slot. mmdet's and mmseg's ``ResNet`` (v1b
stem) have the same layout in both toolboxes: the norm slots are named after
the layer's ``_abbr_`` (``gn1`` / ``bcn1``, ``layer1.0.gn2``, ...), and there
is no classifier. A checkpoint already in that layout passes unchanged.

The norm is detected from the keys (``pbn``: BCN; running statistics without
``pbn``: BN; else GN), and with it the WS variant the file was trained with
(:data:`AUTHORS_WS_VARIANT`).

:class:`AuthorsPretrainedInit` (``init_cfg=dict(type='AuthorsPretrained',
checkpoint=PATH_OR_URL)``) converts on load; ``tools/convert_pretrained.py``
writes the converted file.
"""
import re
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Optional, Tuple

from mmengine.logging import print_log
from mmengine.model.weight_init import update_init_info
from mmengine.runner import CheckpointLoader
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..functional import WS_VARIANTS
from ..layers import WS_CONVS, BatchChannelNorm

NORM_SLOT = re.compile(r'^(?P<block>(layer\d+\.\d+\.)?)bn(?P<index>\d+)\.')
BLOCK = re.compile(r'^layer(?P<layer>\d+)\.(?P<block>\d+)\.')
RUNNING_STAT = re.compile(r'(^|\.)(bn\d+|downsample\.1)\.running_mean$')
NORM_NAMES = {'bn': 'BN', 'gn': 'GN', 'bcn': 'BCN'}
#: The WS variant of the authors' ImageNet checkpoints, by their norm, as
#: their code standardizes: WeightStandardization's
#: ``pytorch-classification/models/layers.py`` (GN+WS) and
#: ``Batch-Channel-Normalization/imagenet/models/layers.py`` (BCN+WS).
AUTHORS_WS_VARIANT = {'gn': 'A', 'bcn': 'B'}


class Conversion(NamedTuple):
    state_dict: 'OrderedDict[str, Tensor]'
    norm: str             # 'bn', 'gn' or 'bcn'
    dropped: List[str]    # the classifier's keys
    unplaced: List[str]   # converted keys the ResNet does not have
    missing: List[str]    # ResNet keys the source does not have
    bad_shapes: List[Tuple[str, tuple, tuple]]  # key, source's, ResNet's
    counters: List[str]   # integer counters the source lacks (kept as built)

    @property
    def complete(self) -> bool:
        return not (self.unplaced or self.missing or self.bad_shapes)


def detect_norm(state_dict: Dict[str, Tensor]) -> str:
    """'bcn', 'bn' or 'gn': the norm a ResNet checkpoint was trained with."""
    if any('.pbn.' in key for key in state_dict):
        return 'bcn'
    if any(RUNNING_STAT.search(key) for key in state_dict):
        return 'bn'
    return 'gn'


def model_norm(module: nn.Module) -> Optional[str]:
    """'bcn', 'gn' or 'bn': the norm layers a model is built with."""
    if any(isinstance(m, BatchChannelNorm) for m in module.modules()):
        return 'bcn'
    if any(isinstance(m, nn.GroupNorm) for m in module.modules()):
        return 'gn'
    if any(isinstance(m, _BatchNorm) for m in module.modules()):
        return 'bn'
    return None


def resnet_depth(keys) -> Optional[int]:
    """The depth of the ResNet whose state-dict keys these are, from its
    blocks per stage (bottleneck: 3 convs a block, basic: 2; + stem + fc)."""
    blocks = {}
    for key in keys:
        m = BLOCK.match(key)
        if m:
            layer = int(m['layer'])
            blocks[layer] = max(blocks.get(layer, 0), int(m['block']) + 1)
    if sorted(blocks) != [1, 2, 3, 4]:
        return None
    convs = 3 if any(k.startswith('layer1.0.conv3.') for k in keys) else 2
    return convs * sum(blocks.values()) + 2


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


def convert(state_dict: Dict[str, Tensor],
            expected: Dict[str, Tensor]) -> Conversion:
    """``state_dict`` renamed onto the keys of ``expected`` (a ResNet's state
    dict), with every key that could not be placed, is missing, or has the
    wrong shape. Integer counters (``num_batches_tracked`` of older files,
    BCN's ``num_nonfinite_batches``) the source lacks are not missing: the
    model keeps the value it was built with."""
    norm = detect_norm(state_dict)
    renamed, dropped = rename(state_dict, abbr=norm)
    absent = [k for k in expected if k not in renamed]
    counters = [k for k in absent if expected[k].dim() == 0
                and not expected[k].is_floating_point()]
    return Conversion(
        renamed, norm, dropped,
        unplaced=[k for k in renamed if k not in expected],
        missing=[k for k in absent if k not in counters],
        bad_shapes=[
            (k, tuple(renamed[k].shape), tuple(expected[k].shape))
            for k in renamed
            if k in expected and renamed[k].shape != expected[k].shape],
        counters=counters)


def resnet_state_dict(depth: int, norm: str) -> Dict[str, Tensor]:
    """Keys and shapes of the mmdet/mmseg ResNet the configs build."""
    from mmdet.models.backbones import ResNet

    # ConvWS and BCN are registered: importing ws_mm, the parent package,
    # runs toolbox.registry
    norm_cfg = (dict(type='BN') if norm == 'bn' else
                dict(type=NORM_NAMES[norm], num_groups=32))
    return ResNet(depth=depth, conv_cfg=dict(type='ConvWS'),
                  norm_cfg=norm_cfg, init_cfg=None).state_dict()


def convert_authors_resnet(state_dict: Dict[str, Tensor],
                           depth: int) -> Conversion:
    """The authors' ResNet-``depth`` weights renamed for mmdet/mmseg."""
    return convert(state_dict,
                   resnet_state_dict(depth, detect_norm(state_dict)))


def _keys(keys: List[str]) -> str:
    return ''.join(f'\n  {key}' for key in keys)


class AuthorsPretrainedInit:
    """Initializes a ResNet backbone from the authors' ImageNet checkpoint
    (or one already in the toolboxes' layout), converting it on load.

    Args:
        checkpoint: a path, URL or mmengine name (``open-mmlab://...``).
        map_location: where to load the tensors.
        allow_variant_change: run the weights with the model's WS variant
            even if it is not the one the checkpoint was trained with (as the
            authors' DeepLabV3 code does), with a warning instead of an error.

    A checkpoint whose norm, depth or WS use does not fit the model, or with
    keys that cannot be placed, missing or of the wrong shape, raises
    ValueError naming the file and every such key.
    """

    def __init__(self, checkpoint: str, map_location: str = 'cpu',
                 allow_variant_change: bool = False):
        self.checkpoint = checkpoint
        self.map_location = map_location
        self.allow_variant_change = allow_variant_change

    def __call__(self, module: nn.Module) -> None:
        src = self.checkpoint
        loaded = CheckpointLoader.load_checkpoint(src, self.map_location)
        state_dict = (loaded.get('state_dict', loaded)
                      if isinstance(loaded, dict) else loaded)
        if not (isinstance(state_dict, dict) and state_dict and all(
                isinstance(v, Tensor) for v in state_dict.values())):
            raise ValueError(f'{src}: expected a state dict of tensors (or a '
                             "dict with one under 'state_dict')")
        expected = module.state_dict()
        result = convert(state_dict, expected)
        self._check_kind(module, result, expected)

        problems = (
            [f'could not place: {k}' for k in result.unplaced] +
            [f'missing in {src}: {k}' for k in result.missing] +
            [f'shape mismatch: {k} is {got}, the model wants {want}'
             for k, got, want in result.bad_shapes])
        if problems:
            raise ValueError(f'{src} does not fit {type(module).__name__}:'
                             + _keys(problems))
        module.load_state_dict(result.state_dict, strict=False)
        print_log(
            f'{src}: {len(result.state_dict)} tensors loaded '
            f'({NORM_NAMES[result.norm]} ResNet), classifier dropped '
            f'({", ".join(result.dropped) or "none"})'
            + (f'; {len(result.counters)} counters not in the file kept as '
               'built' if result.counters else ''), logger='current')
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=f'{type(self).__name__}: '
                             f'load from {src}')

    def _check_kind(self, module, result, expected) -> None:
        """Norm, depth and WS variant of the file against the model's."""
        src, norm = self.checkpoint, result.norm
        want = model_norm(module)
        if norm != want:
            raise ValueError(
                f'{src} holds a ResNet with {NORM_NAMES[norm]} layers, but '
                f'the model has {NORM_NAMES.get(want, "no norm")} layers: '
                "set the model's norm_cfg to match, or use another file")
        depth, model_depth = (resnet_depth(list(result.state_dict)),
                              resnet_depth(list(expected)))
        if depth != model_depth:
            raise ValueError(
                f'{src} holds a ResNet-{depth}, the model is a '
                f'ResNet-{model_depth}: set depth={depth} or use the '
                f'ResNet-{model_depth} file')
        trained = AUTHORS_WS_VARIANT.get(norm)
        variants = {m.variant for m in module.modules()
                    if isinstance(m, WS_CONVS)}
        if trained and not variants:
            raise ValueError(
                f"{src} is the authors' {NORM_NAMES[norm]}+WS ResNet, but "
                "the model's convs are plain: set conv_cfg=dict("
                f"type='ConvWS', variant='{trained}')")
        if trained and not all(v.same_as(WS_VARIANTS[trained])
                               for v in variants):
            message = (
                f'{src} was trained with WS variant {trained!r}, the model '
                'standardizes with '
                f'{sorted(f"{v.name} (eps {v.eps:g})" for v in variants)}: '
                f"set conv_cfg=dict(type='ConvWS', variant='{trained}')")
            if not self.allow_variant_change:
                raise ValueError(message + ', or allow_variant_change='
                                 'True to run the weights that way')
            print_log(message, logger='current', level=30)
