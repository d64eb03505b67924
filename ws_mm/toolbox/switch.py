"""Switching the conv and norm layers of a model config in one call.

The configs under ``configs/`` spell their switch out (a reader sees it);
tools that compare normalizations on one architecture, such as the
benchmarks, derive the variants from one config with :func:`switch_layers`.
"""
import copy

from mmengine.config import ConfigDict


def switch_layers(model_cfg, conv_cfg, norm_cfg):
    """A copy of ``model_cfg`` with every ``conv_cfg`` / ``norm_cfg`` replaced.

    Every dict in the tree that has a ``conv_cfg`` or ``norm_cfg`` key gets
    the new value (``None`` for ``conv_cfg`` means plain convs), so backbone,
    neck and heads switch together. ``norm_eval`` is set to False wherever a
    norm is switched: the compared norms must all train.
    """
    def walk(node):
        if isinstance(node, dict):
            node = {k: walk(v) for k, v in node.items()}
            if 'conv_cfg' in node:
                node['conv_cfg'] = copy.deepcopy(conv_cfg)
            if 'norm_cfg' in node:
                node['norm_cfg'] = copy.deepcopy(norm_cfg)
                if 'norm_eval' in node:
                    node['norm_eval'] = False
            return node
        if isinstance(node, (list, tuple)):
            return type(node)(walk(v) for v in node)
        return node

    return ConfigDict(walk(model_cfg.to_dict() if hasattr(model_cfg, 'to_dict')
                           else model_cfg))
