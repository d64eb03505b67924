"""Run by torchrun from tests: training steps of an estimate-mode BCN on each
rank, with different data (and batch size) per rank, in the dtype given
(float64 or float32). Each rank saves, per step, its input, output, the
gradients w.r.t. them and the parameters, its estimates after the step and
the number of all_reduce calls the step made, to OUT_DIR/rank{RANK}.pt.

    torchrun --nproc_per_node=2 bcn_one_step.py OUT_DIR DTYPE PATH

PATH: 'fused' (C++ passes), 'fused-torch' (torch's kernels) or 'two-stage',
how the BCN computes.
"""
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

import ws_mm.layers.batch_channel_norm as bcn_module
from ws_mm.functional import bcn_kernels
from ws_mm.layers import BatchChannelNorm
from ws_mm import destroy_process_group

STEPS = 2

out_dir, dtype = sys.argv[1], getattr(torch, sys.argv[2])
bcn_module.FUSED = sys.argv[3] != 'two-stage'
bcn_kernels.USE_COMPILED = sys.argv[3] == 'fused'
torch.set_num_threads(1)
dist.init_process_group('gloo', timeout=timedelta(seconds=60))
rank = dist.get_rank()
all_reduce, calls = dist.all_reduce, []


def counted_all_reduce(*args, **kwargs):  # the real collective, counted
    calls.append(1)
    return all_reduce(*args, **kwargs)


dist.all_reduce = counted_all_reduce
try:
    torch.manual_seed(0)  # identical initialization on both ranks
    bcn = BatchChannelNorm(8, num_groups=4).to(dtype).train()
    g = torch.Generator().manual_seed(100 + rank)
    steps = []
    for step in range(STEPS):
        x = torch.randn(2 + 3 * rank, 8, 5, 5, generator=g, dtype=dtype)
        x = (x * (1 + 2 * rank) + 3 * rank - step).requires_grad_()
        upstream = torch.randn(x.shape, generator=g, dtype=dtype)
        calls.clear()
        out = bcn(x)
        out.backward(upstream)
        steps.append(dict(
            x=x.detach(), out=out.detach(), upstream=upstream,
            all_reduce_calls=len(calls), x_grad=x.grad,
            grads={k: p.grad.clone() for k, p in bcn.named_parameters()},
            **{k: v.clone() for k, v in bcn.pbn.state_dict().items()}))
        bcn.zero_grad()
    torch.save(steps, f'{out_dir}/rank{rank}.pt')
finally:
    destroy_process_group()
