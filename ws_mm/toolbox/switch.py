"""Rewriting the layers of a config: switching norms and convs, folding WS.

The configs under ``configs/`` spell their switch out (a reader sees it);
tools that compare normalizations on one architecture, such as the
benchmarks, derive the variants from one config with :func:`switch_layers`.
:func:`fold_conv_cfgs` gives the config of a model whose WS convs were folded
(``ws_mm.fold_weight_standardization``). :func:`config_dicts` is the one walk
over a config tree that these and :mod:`.checks` share.
"""
import copy
from typing import Iterator, Tuple

from mmengine.config import ConfigDict
from mmengine.registry import MODELS

from ..layers import WS_CONVS


def config_dicts(node, path: str = '') -> Iterator[Tuple[str, dict]]:
    """Every dict in a config tree, parents first, with its dotted path.

    A dict may be edited when it is yielded: its values are walked after.
    """
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from config_dicts(value, f'{path}.{key}' if path else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from config_dicts(value, f'{path}[{i}]')


def _copy(cfg) -> dict:
    return copy.deepcopy(cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg)


def switch_layers(model_cfg, conv_cfg, norm_cfg) -> ConfigDict:
    """A copy of ``model_cfg`` with every ``conv_cfg`` / ``norm_cfg`` replaced.

    Every dict in the tree that has a ``conv_cfg`` or ``norm_cfg`` key gets
    the new value (``None`` for ``conv_cfg`` means plain convs), so backbone,
    neck and heads switch together. ``norm_eval`` is set to False wherever a
    norm is switched: the compared norms must all train.
    """
    tree = _copy(model_cfg)
    for _, node in config_dicts(tree):
        if 'conv_cfg' in node:
            node['conv_cfg'] = copy.deepcopy(conv_cfg)
        if 'norm_cfg' in node:
            node['norm_cfg'] = copy.deepcopy(norm_cfg)
            if 'norm_eval' in node:
                node['norm_eval'] = False
    return ConfigDict(tree)


def fold_conv_cfgs(cfg) -> dict:
    """A copy of a config with every WS conv type (any name registered for a
    WS conv, ``ConvWS`` included) replaced by the plain conv it folds into,
    and its WS arguments (``eps``, ``variant``) dropped."""
    tree = _copy(cfg)
    for _, node in config_dicts(tree):
        layer = MODELS.get(node['type']) if isinstance(node.get('type'),
                                                       str) else None
        if isinstance(layer, type) and issubclass(layer, WS_CONVS):
            node.pop('eps', None)
            node.pop('variant', None)
            node['type'] = layer.plain.__name__
    return tree
