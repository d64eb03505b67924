"""Pretrained ResNets into WS and BCN models, checked and converted on load.

Two kinds of source:

- the authors' ImageNet files (joe-siyuan-qiao/WeightStandardization and
  /Batch-Channel-Normalization): torchvision ResNet names, usually behind a
  ``module.`` prefix, with GroupNorm (GN+WS) or BCN (BCN+WS: ``bn*.pbn.*``
  for the per-channel stage, ``bn*.weight`` / ``bn*.bias`` of shape
  (1, 32, 1) for the group affine) in every ``bn*`` slot, and ``fc.*``;
- a checkpoint of a toolbox run, an mmpretrain classifier's above all:
  ``backbone.*`` with the norm slots named after the layer's ``_abbr_``
  (``gn1``, ``layer1.0.bcn2``, ...), ``head.fc.*``, and the run's config in
  ``meta['cfg']``.

And three kinds of target: a toolbox ``ResNet`` (mmdet's, mmseg's and
mmpretrain's share the layout; the classifier is dropped), an mmpretrain
``ImageClassifier`` (``backbone.*`` and ``head.fc.*``), or an mmaction
``ResNet`` / ``ResNetTSM``, which hold each conv and its norm in a
``ConvModule`` (``layer1.0.conv1.conv``, ``layer1.0.conv1.gn``) and may wrap
it (TSM's shift: ``layer1.0.conv1.conv.net``).

The norm is detected from the keys (``pbn``: BCN; running statistics without
``pbn``: BN; else GN), and the WS variant the file was trained with from its
config, or for the authors' files from their code (:data:`AUTHORS_WS_VARIANT`).

:class:`AuthorsPretrainedInit` (``init_cfg=dict(type='AuthorsPretrained',
checkpoint=PATH_OR_URL)``) converts on load; ``tools/convert_pretrained.py``
writes the converted file.
"""
import ast
import re
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Optional, Tuple, Union

from mmcv.cnn import build_conv_layer
from mmengine.logging import print_log
from mmengine.model.weight_init import update_init_info
from mmengine.runner import CheckpointLoader
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..functional import WS_VARIANTS, WSVariant
from ..layers import WS_CONVS, BatchChannelNorm

NORM_SLOT = re.compile(r'^(?P<block>(layer\d+\.\d+\.)?)bn(?P<index>\d+)\.')
# In mmaction's layout, a conv slot or a norm slot (any toolbox's name) of
# the stem or a block, or a downsample part, goes into its ConvModule.
SLOT = re.compile(r'^(?P<block>(layer\d+\.\d+\.)?)'
                  r'((?P<conv>conv)|bn|gn|bcn)(?P<index>\d+)\.')
DOWNSAMPLE = re.compile(
    r'^(?P<block>layer\d+\.\d+\.)downsample\.(?P<part>[01])\.')
WRAPPER = re.compile(r'\.(net|block)\.')  # mmaction's TSM wrappers
BLOCK = re.compile(r'^layer(?P<layer>\d+)\.(?P<block>\d+)\.')
RUNNING_STAT = re.compile(r'(^|\.)(bn\d+|downsample\.1)\.running_mean$')
NORM_NAMES = {'bn': 'BN', 'gn': 'GN', 'bcn': 'BCN'}
#: The WS variant of the authors' ImageNet checkpoints, by their norm, as
#: their code standardizes: WeightStandardization's
#: ``pytorch-classification/models/layers.py`` (GN+WS) and
#: ``Batch-Channel-Normalization/imagenet/models/layers.py`` (BCN+WS).
AUTHORS_WS_VARIANT = {'gn': 'A', 'bcn': 'B'}
#: How a file's convs were trained: a WS variant, PLAIN, or None (unknown).
PLAIN = 'plain'
Convs = Union[WSVariant, str, None]


class Conversion(NamedTuple):
    state_dict: 'OrderedDict[str, Tensor]'
    norm: str             # 'bn', 'gn' or 'bcn'
    dropped: List[str]    # source keys the target has no place for by design
    unplaced: List[str]   # converted keys the target does not have
    missing: List[str]    # target keys the source does not have
    bad_shapes: List[Tuple[str, tuple, tuple]]  # key, source's, target's
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


def source_names(state_dict: Dict[str, Tensor]):
    """The source's ResNet keys without ``module.`` and, for a toolbox
    model, without ``backbone.`` (its ``head.fc`` as ``fc``); returns
    (named, dropped keys: the rest of a toolbox model)."""
    named, dropped = OrderedDict(), []
    toolbox = any(k.startswith(('backbone.', 'module.backbone.'))
                  for k in state_dict)
    for key, value in state_dict.items():
        key = key[len('module.'):] if key.startswith('module.') else key
        if toolbox:
            if key.startswith('backbone.'):
                key = key[len('backbone.'):]
            elif key.startswith('head.fc.'):
                key = key[len('head.'):]
            else:
                dropped.append(key)
                continue
        named[key] = value
    return named, dropped


def _convmodule_key(key: str, norm: str) -> str:
    """A ResNet key in mmaction's ConvModule layout."""
    m = DOWNSAMPLE.match(key)
    if m:
        part = 'conv' if m['part'] == '0' else norm
        return f'{m["block"]}downsample.{part}.{key[m.end():]}'
    m = SLOT.match(key)
    if m:
        part = 'conv' if m['conv'] else norm
        return f'{m["block"]}conv{m["index"]}.{part}.{key[m.end():]}'
    return key


def convert(state_dict: Dict[str, Tensor],
            expected: Dict[str, Tensor]) -> Conversion:
    """``state_dict`` renamed onto the keys of ``expected`` (the state dict
    of a ResNet, of a classifier: ``backbone.*`` and ``head.fc.*``, or of an
    mmaction ResNet), with every key that could not be placed, is missing,
    or has the wrong shape. Integer counters (``num_batches_tracked`` of
    older files, BCN's ``num_nonfinite_batches``) the source lacks are not
    missing: the model keeps the value it was built with."""
    classifier = any(k.startswith('backbone.') for k in expected)
    convmodule = any(k.startswith('conv1.conv.') for k in expected)
    unwrapped = {WRAPPER.sub('.', k): k for k in expected} if convmodule else {}
    source, dropped = source_names(state_dict)
    norm = detect_norm(source)
    renamed = OrderedDict()
    for key, value in source.items():
        if key.startswith('fc.'):
            if classifier:
                renamed[f'head.{key}'] = value
            else:
                dropped.append(key)
            continue
        if convmodule:
            key = _convmodule_key(key, norm)
            key = unwrapped.get(key, key)
        else:
            key = NORM_SLOT.sub(
                lambda m: f'{m["block"]}{norm}{m["index"]}.', key)
        renamed[f'backbone.{key}' if classifier else key] = value
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


def _dict_call(node) -> Optional[dict]:
    """The keywords of a ``dict(...)`` node, else None."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == 'dict' and not node.args):
        return {k.arg: k.value for k in node.keywords if k.arg}
    return None


def backbone_conv_cfg(text: str) -> Tuple[bool, Optional[dict]]:
    """(found, ``model.backbone.conv_cfg``) of a config's text. The text is
    parsed, never run: it comes from a checkpoint, which is not trusted."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return False, None
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == 'model'
                for t in stmt.targets)):
            continue
        backbone = _dict_call((_dict_call(stmt.value) or {}).get('backbone'))
        if backbone is None:
            return False, None
        node = backbone.get('conv_cfg')
        try:
            if node is None:
                return True, None  # a toolbox ResNet's default: plain convs
            kwargs = _dict_call(node)
            return True, (ast.literal_eval(node) if kwargs is None else
                          {k: ast.literal_eval(v) for k, v in kwargs.items()})
        except ValueError:
            return False, None
    return False, None


def trained_convs(checkpoint: dict, norm: str) -> Convs:
    """How the file's convs were trained: from its config (a toolbox run
    saves it in ``meta['cfg']``), else as the authors' code of its norm."""
    meta = checkpoint.get('meta')
    text = meta.get('cfg') if isinstance(meta, dict) else None
    if isinstance(text, str):
        found, conv_cfg = backbone_conv_cfg(text)
        if not found:
            return None
        if conv_cfg is None:
            return PLAIN
        try:  # the WS convs are in the root registry: no scope needed
            conv = build_conv_layer(conv_cfg, 1, 1, 3)
        except (KeyError, TypeError, ValueError):
            return None
        return conv.variant if isinstance(conv, WS_CONVS) else PLAIN
    variant = AUTHORS_WS_VARIANT.get(norm)
    return WS_VARIANTS[variant] if variant else None


def _describe(variant: WSVariant) -> str:
    return f'{variant.name!r} (eps {variant.eps:g})'


def fit_problems(module: nn.Module, expected: Dict[str, Tensor],
                 result: Conversion,
                 trained: Convs) -> Tuple[List[str], Optional[str]]:
    """What keeps the file from ``module``: every mismatch of norm, depth
    and keys, and, separately, a WS variant mismatch (which
    ``allow_variant_change`` can accept)."""
    problems = []
    norm, want = result.norm, model_norm(module)
    if norm != want:
        problems.append(
            f'it holds a ResNet with {NORM_NAMES[norm]} layers, the model '
            f'has {NORM_NAMES.get(want, "no norm")} layers: set the '
            "model's norm_cfg to match, or use another file")
    prefix = 'backbone.' if any(k.startswith('backbone.')
                                for k in expected) else ''

    def depth(keys):
        return resnet_depth([k[len(prefix):] for k in keys
                             if k.startswith(prefix)])
    have, model_depth = depth(result.state_dict), depth(expected)
    if have != model_depth:
        problems.append(
            f'it holds a ResNet-{have}, the model is a ResNet-{model_depth}:'
            f' set depth={have} or use the ResNet-{model_depth} file')
    if not problems:  # else every key would be listed for the same reason
        problems += (
            [f'could not place: {k}' for k in result.unplaced] +
            [f'missing in the file: {k}' for k in result.missing] +
            [f'shape mismatch: {k} is {got}, the model wants {want}'
             for k, got, want in result.bad_shapes])

    variants = {m.variant for m in module.modules()
                if isinstance(m, WS_CONVS)}
    if trained is None or (trained == PLAIN and not variants):
        return problems, None
    if trained == PLAIN:
        return problems + [
            'it was trained with plain convs, the model standardizes them: '
            'remove conv_cfg'], None
    fix = f"set conv_cfg=dict(type='ConvWS', variant='{trained.name}'"
    fix += ')' if trained.eps == WS_VARIANTS.get(
        trained.name, trained).eps else f', eps={trained.eps:g})'
    if not variants:
        return problems + [
            f'it was trained with WS variant {_describe(trained)}, the '
            f"model's convs are plain: {fix}"], None
    if all(v.same_as(trained) for v in variants):
        return problems, None
    return problems, (
        f'it was trained with WS variant {_describe(trained)}, the model '
        f'standardizes with {", ".join(sorted(map(_describe, variants)))}: '
        f'{fix}')


def _keys(lines: List[str]) -> str:
    return ''.join(f'\n  {line}' for line in lines)


def load_state_dict(src: str, map_location: str = 'cpu'):
    """(the file's state dict, the whole loaded object as a dict)."""
    loaded = CheckpointLoader.load_checkpoint(src, map_location)
    state_dict = (loaded.get('state_dict', loaded)
                  if isinstance(loaded, dict) else loaded)
    if not (isinstance(state_dict, dict) and state_dict and all(
            isinstance(v, Tensor) for v in state_dict.values())):
        raise ValueError(f'{src}: expected a state dict of tensors (or a '
                         "dict with one under 'state_dict')")
    return state_dict, loaded


def given_convs(convs: Optional[str]) -> Convs:
    """``'plain'`` or a WS variant's name as a :data:`Convs`; None stays
    None (ask the file)."""
    if convs is None or convs == PLAIN:
        return convs
    if convs not in WS_VARIANTS:
        raise ValueError(f'convs={convs!r}: expected {PLAIN!r} or a WS '
                         f'variant, one of {sorted(WS_VARIANTS)}')
    return WS_VARIANTS[convs]


def fit(src: str, module: nn.Module, map_location: str = 'cpu',
        allow_variant_change: bool = False, convs: Optional[str] = None
        ) -> Tuple[Conversion, Optional[str]]:
    """The file at ``src`` converted onto ``module`` (a ResNet or a
    classifier), and the WS variant change allowed, if any; ValueError
    naming every mismatch if it does not fit. ``convs`` says how the file's
    convs were trained where the file cannot (:func:`given_convs`)."""
    trained = given_convs(convs)
    state_dict, loaded = load_state_dict(src, map_location)
    expected = module.state_dict()
    result = convert(state_dict, expected)
    if trained is None:
        trained = trained_convs(loaded, result.norm)
    problems, variant = fit_problems(module, expected, result, trained)
    if variant and not allow_variant_change:
        problems.append(variant + ', or allow_variant_change=True to run '
                        'the weights that way')
    if problems:
        raise ValueError(f'{src} does not fit {type(module).__name__}:'
                         + _keys(problems))
    return result, variant


class AuthorsPretrainedInit:
    """Initializes a ResNet backbone from the authors' ImageNet checkpoint
    or a toolbox run's (an mmpretrain classifier's, say), converting it on
    load.

    Args:
        checkpoint: a path, URL or mmengine name (``open-mmlab://...``).
        map_location: where to load the tensors.
        allow_variant_change: run the weights with the model's WS variant
            even if it is not the one the checkpoint was trained with (as the
            authors' DeepLabV3 code does), with a warning instead of an error.
        convs: how the file's convs were trained, ``'plain'`` or a WS
            variant's name, for a file that does not say (without a saved
            config, a GN file is taken for the authors' GN+WS): Detectron's
            GN ResNets, say, have plain convs.

    A checkpoint whose norm, depth or WS use does not fit the model, or with
    keys that cannot be placed, missing or of the wrong shape, raises
    ValueError naming the file and every such mismatch.
    """

    def __init__(self, checkpoint: str, map_location: str = 'cpu',
                 allow_variant_change: bool = False,
                 convs: Optional[str] = None):
        given_convs(convs)  # a bad value fails before the file is read
        self.checkpoint = checkpoint
        self.map_location = map_location
        self.allow_variant_change = allow_variant_change
        self.convs = convs

    def __call__(self, module: nn.Module) -> None:
        src = self.checkpoint
        result, variant_change = fit(src, module, self.map_location,
                                     self.allow_variant_change, self.convs)
        if variant_change:
            print_log(f'{src}: {variant_change}', logger='current',
                      level=30)
        module.load_state_dict(result.state_dict, strict=False)
        # The file's tensors are final, but mmengine runs an initializer
        # other than 'Pretrained' before the children's init_weights, which
        # would redo some (mmaction's stem ConvModule): mark those done.
        for sub in module.modules():
            if sub is not module and hasattr(sub, 'init_weights'):
                sub.is_init = True
        print_log(
            f'{src}: {len(result.state_dict)} tensors loaded '
            f'({NORM_NAMES[result.norm]} ResNet), not used: '
            f'{", ".join(result.dropped) or "none"}'
            + (f'; {len(result.counters)} counters not in the file kept as '
               'built' if result.counters else ''), logger='current')
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=f'{type(self).__name__}: '
                             f'load from {src}')
