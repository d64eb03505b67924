"""Convert the authors' ImageNet GN+WS / BCN+WS ResNets to mmdet/mmseg keys.

    python tools/convert_pretrained.py SRC DST [--depth 50]

SRC is a checkpoint of the authors' code; DST gets the layout of mmdet's and
mmseg's ``ResNet`` (see ws_mm.toolbox.pretrained), for offline use; configs
can instead name SRC (a path or URL) in
``init_cfg=dict(type='AuthorsPretrained', checkpoint=SRC)``, which converts
on load with the same code. Every key that could not be placed, or whose
shape does not fit, is reported, and the tool exits 1 without writing DST.
It prints the ``conv_cfg`` the weights were trained with.
"""
import argparse
import sys

import torch

from ws_mm.toolbox.checkpoint import load_checkpoint_file
from ws_mm.toolbox.pretrained import (AUTHORS_WS_VARIANT, NORM_NAMES,
                                      convert_authors_resnet)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help="the authors' checkpoint")
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--depth', type=int, default=50,
                        choices=[18, 34, 50, 101, 152])
    args = parser.parse_args(argv)

    checkpoint = load_checkpoint_file(args.src, map_location='cpu')
    result = convert_authors_resnet(checkpoint.get('state_dict', checkpoint),
                                    args.depth)
    print(f'{args.src}: ResNet-{args.depth} with {NORM_NAMES[result.norm]}, '
          f'{len(result.state_dict)} tensors converted, classifier dropped '
          f'({", ".join(result.dropped) or "none"})')
    for key in result.unplaced:
        print(f'  could not place: {key}')
    for key in result.missing:
        print(f'  missing in source: {key}')
    for key, got, want in result.bad_shapes:
        print(f'  shape mismatch: {key} is {got}, ResNet wants {want}')
    if not result.complete:
        print('not written: fix --depth or the source checkpoint')
        return 1
    torch.save({'state_dict': result.state_dict,
                'meta': {'source': args.src, 'norm': result.norm}}, args.dst)
    print(f'written: {args.dst}')
    if result.norm in AUTHORS_WS_VARIANT:
        print("its convs need conv_cfg=dict(type='ConvWS', "
              f"variant='{AUTHORS_WS_VARIANT[result.norm]}')")
    return 0


if __name__ == '__main__':
    sys.exit(main())
