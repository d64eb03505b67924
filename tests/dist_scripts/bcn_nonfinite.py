"""Run by torchrun from tests: training steps of an estimate-mode BCN on 2
ranks where one rank's batch is not finite at a time. Each rank saves its
estimates after every step, the all_reduce calls per step and the messages
of the ``ws_mm`` logger to OUT_DIR/rank{RANK}.pt.

    torchrun --nproc_per_node=2 bcn_nonfinite.py OUT_DIR
"""
import logging
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from ws_mm.layers import BatchChannelNorm
from ws_mm import destroy_process_group

out_dir = sys.argv[1]
torch.set_num_threads(1)
dist.init_process_group('gloo', timeout=timedelta(seconds=60))
rank = dist.get_rank()
messages = []
handler = logging.Handler()
handler.emit = lambda record: messages.append(record.getMessage())
logging.getLogger('ws_mm').addHandler(handler)
reduces = 0
all_reduce = dist.all_reduce


def counted_all_reduce(*args, **kwargs):
    global reduces
    reduces += 1
    return all_reduce(*args, **kwargs)


dist.all_reduce = counted_all_reduce
try:
    torch.manual_seed(0)  # identical initialization on both ranks
    model = nn.Sequential(nn.Identity(), BatchChannelNorm(8, num_groups=4))
    model = model.double().train()
    # step: the rank whose batch is not finite, and how
    bad = {1: (1, float('nan')), 2: (0, float('inf'))}
    steps = []
    for step in range(4):
        g = torch.Generator().manual_seed(100 * step + rank)
        x = torch.randn(2 + rank, 8, 4, 4, generator=g, dtype=torch.float64)
        if step in bad and bad[step][0] == rank:
            x[0, 3, 1, 2] = bad[step][1]
        reduces = 0
        model(x)
        steps.append(dict(reduces=reduces, **{
            k: v.clone() for k, v in model[1].pbn.state_dict().items()}))
    torch.save(dict(steps=steps, messages=messages),
               f'{out_dir}/rank{rank}.pt')
finally:
    destroy_process_group()
