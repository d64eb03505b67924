"""Run by torchrun from tests: one training step of an estimate-mode BCN on
each rank, with different data (and batch size) per rank. Each rank saves its
input and its estimates to OUT_DIR/rank{RANK}.pt."""
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

from ws_mm.layers import BatchChannelNorm

out_dir = sys.argv[1]
torch.set_num_threads(1)
dist.init_process_group('gloo', timeout=timedelta(seconds=30))
rank = dist.get_rank()
try:
    torch.manual_seed(0)  # identical initialization on both ranks
    bcn = BatchChannelNorm(8, num_groups=4).train()
    g = torch.Generator().manual_seed(100 + rank)
    x = torch.randn(2 + 3 * rank, 8, 5, 5, generator=g) * (1 + 2 * rank) + 3 * rank
    bcn(x).sum().backward()
    torch.save(dict(x=x, **{k: v.clone() for k, v in bcn.pbn.state_dict().items()}),
               f'{out_dir}/rank{rank}.pt')
finally:
    dist.destroy_process_group()
