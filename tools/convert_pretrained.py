"""Convert the authors' ImageNet GN+WS / BCN+WS ResNets to OpenMMLab keys.

    python tools/convert_pretrained.py SRC DST [--depth 50 | --config CONFIG]

SRC is a checkpoint of the authors' code (or of a toolbox run). With
``--depth``, DST gets the layout of mmdet's and mmseg's ``ResNet`` (see
ws_mm.toolbox.pretrained), for offline use; configs can instead name SRC (a
path or URL) in ``init_cfg=dict(type='AuthorsPretrained', checkpoint=SRC)``,
which converts on load with the same code. With ``--config``, DST fits that
config's model: an mmpretrain classifier whole (backbone and fc, for
``tools/test.py CONFIG DST``), else the model's backbone; the file's norm,
depth and WS variant are checked against the model. Every key that could not
be placed, and every mismatch, is reported, and the tool exits 1 without
writing DST.
"""
import argparse
import sys
from typing import Tuple

import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope
from torch import nn

from ws_mm.toolbox.checkpoint import load_checkpoint_file
from ws_mm.toolbox.pretrained import (AUTHORS_WS_VARIANT, NORM_NAMES,
                                      convert_authors_resnet, fit)


def config_target(path: str) -> Tuple[nn.Module, str]:
    """The config's classifier (a head with an ``fc``), else its backbone,
    and the config's text."""
    cfg = Config.fromfile(path)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        model = MODELS.build(cfg.model)
    classifier = isinstance(getattr(getattr(model, 'head', None), 'fc', None),
                            nn.Linear)
    return (model if classifier else model.backbone), cfg.pretty_text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help="the authors' checkpoint")
    parser.add_argument('dst', help='where to write the converted checkpoint')
    target = parser.add_mutually_exclusive_group()
    target.add_argument('--depth', type=int, default=50,
                        choices=[18, 34, 50, 101, 152],
                        help="a ResNet of mmdet's and mmseg's layout")
    target.add_argument('--config', help="this config's model")
    args = parser.parse_args(argv)

    if args.config:
        model, text = config_target(args.config)
        try:
            result, _ = fit(args.src, model)
        except ValueError as error:
            print(f'{error}\nnot written: fix the config or use another file')
            return 1
        meta = {'source': args.src, 'cfg': text}
        print(f'{args.src}: {NORM_NAMES[result.norm]} ResNet, '
              f'{len(result.state_dict)} tensors converted for '
              f'{type(model).__name__}, not used: '
              f'{", ".join(result.dropped) or "none"}')
    else:
        checkpoint = load_checkpoint_file(args.src, map_location='cpu')
        result = convert_authors_resnet(
            checkpoint.get('state_dict', checkpoint), args.depth)
        print(f'{args.src}: ResNet-{args.depth} with '
              f'{NORM_NAMES[result.norm]}, {len(result.state_dict)} tensors '
              f'converted, not used: {", ".join(result.dropped) or "none"}')
        for key in result.unplaced:
            print(f'  could not place: {key}')
        for key in result.missing:
            print(f'  missing in source: {key}')
        for key, got, want in result.bad_shapes:
            print(f'  shape mismatch: {key} is {got}, ResNet wants {want}')
        if not result.complete:
            print('not written: fix --depth or the source checkpoint')
            return 1
        meta = {'source': args.src, 'norm': result.norm}
    torch.save({'state_dict': result.state_dict, 'meta': meta}, args.dst)
    print(f'written: {args.dst}')
    if not args.config and result.norm in AUTHORS_WS_VARIANT:
        print("its convs need conv_cfg=dict(type='ConvWS', "
              f"variant='{AUTHORS_WS_VARIANT[result.norm]}')")
    return 0


if __name__ == '__main__':
    sys.exit(main())
