"""Pointing the demo configs at a folder written by ``tools/make_demo_data.py``.

The demo configs read ``data/demo``; tools that write the data elsewhere (the
demo, the benchmarks, the stress check, the tests) merge these options into
the config (``cfg.merge_from_dict``) or pass them as ``--cfg-options``.
"""
from pathlib import Path
from typing import Dict, List, Union

DEMO_CONFIGS = {
    'mmdet': 'configs/demo/mask-rcnn_r18_fpn_gn-ws-all_1xb2-500it_demo-coco.py',
    'mmseg': 'configs/demo/deeplabv3_r18-d16_gn-ws-all_1xb2-500it_demo-voc-'
    '256x256.py',
}


def data_root_options(scope: str, root: Union[str, Path]) -> Dict[str, str]:
    """Config options that point a demo config of ``scope`` (``'mmdet'``:
    the COCO layout, ``'mmseg'``: the VOC layout) at the data in ``root``."""
    root = Path(root).resolve()
    if scope == 'mmdet':
        ann = f'{root}/coco/annotations/instances_val2017.json'
        options = {f'{split}_dataloader.dataset.data_root': f'{root}/coco/'
                   for split in ('train', 'val', 'test')}
        return dict(options, **{'val_evaluator.ann_file': ann,
                                'test_evaluator.ann_file': ann})
    if scope == 'mmseg':
        return {f'{split}_dataloader.dataset.data_root':
                f'{root}/VOCdevkit/VOC2012'
                for split in ('train', 'val', 'test')}
    raise ValueError(f'no demo data for scope {scope!r}; use one of '
                     f'{sorted(DEMO_CONFIGS)}')


def as_cfg_options(options: Dict[str, object]) -> List[str]:
    """``key=value`` words for ``--cfg-options``."""
    return [f'{key}={value}' for key, value in options.items()]
