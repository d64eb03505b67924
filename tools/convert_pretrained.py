"""Convert the authors' ImageNet GN+WS / BCN+WS ResNets to mmdet/mmseg keys.

    python tools/convert_pretrained.py SRC DST [--depth 50]

SRC is a checkpoint of the authors' code (joe-siyuan-qiao/WeightStandardization
and /Batch-Channel-Normalization): torchvision ResNet names, usually behind a
``module.`` prefix, with GroupNorm (GN+WS) or BCN (BCN+WS: ``bn*.pbn.*`` for
the per-channel stage, ``bn*.weight`` / ``bn*.bias`` of shape (1, 32, 1) for
the group affine) in every ``bn*`` slot. DST gets the layout of mmdet's and
mmseg's ``ResNet`` (v1b stem), which is the same in both toolboxes: the norm
slots are renamed after the layer's ``_abbr_`` (``gn1`` / ``bcn1``,
``layer1.0.gn2``, ...), the classifier is dropped, and the result is checked
against a ResNet built with ws_mm's layers: every key that could not be
placed, or whose shape does not fit, is reported, and the tool exits 1.

The norm is detected from the keys (``pbn`` means BCN). The authors' BCN+WS
models standardize with WS variant 'B', the GN+WS (JHU) ones with 'A': use the
matching ``conv_cfg=dict(type='ConvWS', variant=...)`` in the config.
"""
import argparse
import re
import sys
from collections import OrderedDict

import torch

from ws_mm.toolbox.checkpoint import load_checkpoint_file

NORM_SLOT = re.compile(r'^(?P<block>(layer\d+\.\d+\.)?)bn(?P<index>\d+)\.')


def detect_norm(state_dict) -> str:
    return 'bcn' if any('.pbn.' in key for key in state_dict) else 'gn'


def convert(state_dict, abbr: str):
    """Rename the authors' keys; returns (converted, dropped keys)."""
    converted, dropped = OrderedDict(), []
    for key, value in state_dict.items():
        key = key[len('module.'):] if key.startswith('module.') else key
        if key.startswith('fc.'):
            dropped.append(key)
            continue
        key = NORM_SLOT.sub(
            lambda m: f'{m["block"]}{abbr}{m["index"]}.', key)
        converted[key] = value
    return converted, dropped


def expected_state_dict(depth: int, norm: str):
    """Keys and shapes of the mmdet/mmseg ResNet the configs build."""
    import ws_mm  # noqa: F401  (registers ConvWS and BCN)
    from mmdet.models.backbones import ResNet
    norm_cfg = (dict(type='BCN', num_groups=32) if norm == 'bcn' else
                dict(type='GN', num_groups=32))
    backbone = ResNet(depth=depth, conv_cfg=dict(type='ConvWS'),
                      norm_cfg=norm_cfg, init_cfg=None)
    return backbone.state_dict()


def compare(converted, expected):
    """Keys that could not be placed, expected keys left empty, bad shapes."""
    unplaced = [k for k in converted if k not in expected]
    missing = [k for k in expected if k not in converted]
    bad_shapes = [(k, tuple(converted[k].shape), tuple(expected[k].shape))
                  for k in converted
                  if k in expected and converted[k].shape != expected[k].shape]
    return unplaced, missing, bad_shapes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help="the authors' checkpoint")
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--depth', type=int, default=50,
                        choices=[18, 34, 50, 101, 152])
    args = parser.parse_args(argv)

    checkpoint = load_checkpoint_file(args.src, map_location='cpu')
    state_dict = checkpoint.get('state_dict', checkpoint)
    norm = detect_norm(state_dict)
    converted, dropped = convert(state_dict, abbr=norm)
    unplaced, missing, bad_shapes = compare(
        converted, expected_state_dict(args.depth, norm))

    print(f'{args.src}: ResNet-{args.depth} with {norm.upper()}+WS, '
          f'{len(converted)} tensors converted, classifier dropped '
          f'({", ".join(dropped) or "none"})')
    for key in unplaced:
        print(f'  could not place: {key}')
    for key in missing:
        print(f'  missing in source: {key}')
    for key, got, want in bad_shapes:
        print(f'  shape mismatch: {key} is {got}, ResNet wants {want}')
    if unplaced or missing or bad_shapes:
        print('not written: fix --depth or the source checkpoint')
        return 1
    torch.save({'state_dict': converted,
                'meta': {'source': args.src, 'norm': norm}}, args.dst)
    print(f'written: {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
