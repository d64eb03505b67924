"""Run by torchrun from tests/test_gpu.py, one process per GPU (nccl):
BCN(mode='batch', sync_bn=True) in training on this rank's half of a batch.
Reads OUT_DIR/inputs.pt (the batch, the output gradient, the layer's state
and size) and saves to OUT_DIR/rank{RANK}.pt the output, the input gradient,
the parameter gradients and the running statistics.

    torchrun --nproc_per_node=2 bcn_sync_bn.py OUT_DIR
"""
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

from ws_mm import destroy_process_group
from ws_mm.layers import BatchChannelNorm

out_dir = sys.argv[1]
rank = int(os.environ['LOCAL_RANK'])
torch.cuda.set_device(rank)
dist.init_process_group('nccl', timeout=timedelta(seconds=120))
try:
    inputs = torch.load(f'{out_dir}/inputs.pt')
    bcn = BatchChannelNorm(inputs['num_features'], inputs['num_groups'],
                           mode='batch', sync_bn=True)
    bcn.load_state_dict(inputs['state'])
    bcn.cuda().train()
    part = inputs['x'].chunk(2)[rank].cuda().requires_grad_()
    out = bcn(part)
    out.backward(inputs['grad_out'].chunk(2)[rank].cuda())
    torch.save(dict(out=out.detach().cpu(), grad_input=part.grad.cpu(),
                    params={k: p.grad.cpu()
                            for k, p in bcn.named_parameters()},
                    running_mean=bcn.pbn.running_mean.cpu(),
                    running_var=bcn.pbn.running_var.cpu()),
               f'{out_dir}/rank{rank}.pt')
finally:
    destroy_process_group()
