"""Fold WS into plain convs: a checkpoint and config that need no ws_mm.

    python tools/fold_ws.py CONFIG CHECKPOINT OUT_DIR

Builds the model of CONFIG, loads CHECKPOINT, replaces every WS conv by the
plain conv holding its standardized weight (ws_mm.fold_weight_standardization),
and writes OUT_DIR/<name>_folded.pth (state_dict + meta) and
OUT_DIR/<name>_folded.py, the config with its WS conv types replaced by the
plain ones, so the pair runs with the toolbox alone (for example for export
with mmdeploy). Outputs are unchanged up to float rounding.
"""
import argparse
import os
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import load_checkpoint

from ws_mm import fold_weight_standardization
from ws_mm.toolbox.switch import fold_conv_cfgs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out_dir')
    args = parser.parse_args(argv)

    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope'))
    model = MODELS.build(cfg.model)
    load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    model.eval()
    fold_weight_standardization(model)

    name = osp.splitext(osp.basename(args.config))[0] + '_folded'
    os.makedirs(args.out_dir, exist_ok=True)
    ckpt_out = osp.join(args.out_dir, name + '.pth')
    torch.save({'state_dict': model.state_dict(),
                'meta': {'folded_from': args.checkpoint}}, ckpt_out)
    folded = Config(fold_conv_cfgs(cfg))
    cfg_out = osp.join(args.out_dir, name + '.py')
    folded.dump(cfg_out)
    print(f'written: {ckpt_out}\nwritten: {cfg_out}')


if __name__ == '__main__':
    main()
