"""Run by torchrun from tests: recalibrate_norm_statistics on 2 ranks, with
different data (and batch sizes) per rank. Each rank saves the inputs its
estimate stage and its BN saw, and the model's state, to OUT_DIR/rank{RANK}.pt.

    torchrun --nproc_per_node=2 recalibrate.py OUT_DIR
"""
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from ws_mm.layers import EstimatedBatchNorm
from ws_mm import destroy_process_group
from ws_mm import recalibrate_norm_statistics

out_dir = sys.argv[1]
torch.set_num_threads(1)
dist.init_process_group('gloo', timeout=timedelta(seconds=60))
rank = dist.get_rank()
try:
    torch.manual_seed(0)  # identical initialization on both ranks
    model = nn.Sequential(EstimatedBatchNorm(3), nn.Conv2d(3, 4, 1),
                          nn.BatchNorm2d(4)).double()
    inputs = dict(est=[], bn=[])
    for key, layer in (('est', model[0]), ('bn', model[2])):
        layer.register_forward_pre_hook(
            lambda m, args, key=key: inputs[key].append(args[0].clone()))
    g = torch.Generator().manual_seed(100 + rank)
    batches = [torch.randn(2 + rank, 3, 4, 4, generator=g,
                           dtype=torch.float64) * (1 + 2 * rank) + 3 * rank
               for _ in range(3)]
    recalibrate_norm_statistics(model, batches)
    torch.save(dict(state=model.state_dict(), **inputs),
               f'{out_dir}/rank{rank}.pt')
finally:
    destroy_process_group()
