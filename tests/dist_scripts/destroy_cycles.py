"""Run by torchrun from tests: CYCLES times, start a gloo group, all-reduce
a tensor that only the group's worker thread still holds afterwards, and end
the group with ws_mm.destroy_process_group. On older torch
(2.0 among them) torch.distributed.destroy_process_group can deadlock there
(see that function); a rank that hangs leaves the other one timing out in
the next start. Each rank writes the number of cycles it finished to
OUT_DIR/rank{RANK}.txt.

    torchrun --nproc_per_node=2 destroy_cycles.py OUT_DIR CYCLES
"""
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

from ws_mm import destroy_process_group

out_dir, cycles = sys.argv[1], int(sys.argv[2])
rank, world_size = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
torch.set_num_threads(1)
for cycle in range(cycles):
    # a store of its own for each group: torchrun's would hand the next
    # group the previous one's addresses
    dist.init_process_group('gloo', f'file://{out_dir}/store{cycle}',
                            rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=30))
    dist.all_reduce(torch.ones(1000))
    destroy_process_group()
with open(f'{out_dir}/rank{rank}.txt', 'w') as f:
    f.write(str(cycles))
