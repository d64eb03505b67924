"""Run by torchrun from tests: one training step of an estimate-mode BCN on
each rank, with different data (and batch size) per rank, in the dtype given
(float64 or float32). Each rank saves its input and its estimates to
OUT_DIR/rank{RANK}.pt.

    torchrun --nproc_per_node=2 bcn_one_step.py OUT_DIR DTYPE
"""
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

from ws_mm.layers import BatchChannelNorm
from ws_mm import destroy_process_group

out_dir, dtype = sys.argv[1], getattr(torch, sys.argv[2])
torch.set_num_threads(1)
dist.init_process_group('gloo', timeout=timedelta(seconds=60))
rank = dist.get_rank()
try:
    torch.manual_seed(0)  # identical initialization on both ranks
    bcn = BatchChannelNorm(8, num_groups=4).to(dtype).train()
    g = torch.Generator().manual_seed(100 + rank)
    x = torch.randn(2 + 3 * rank, 8, 5, 5, generator=g, dtype=dtype)
    x = x * (1 + 2 * rank) + 3 * rank
    bcn(x).sum().backward()
    torch.save(dict(x=x, **{k: v.clone() for k, v in bcn.pbn.state_dict().items()}),
               f'{out_dir}/rank{rank}.pt')
finally:
    destroy_process_group()
