"""Ending a ``torch.distributed`` process group without the deadlock of
older torch. Needs torch alone: for plain PyTorch scripts as for the
toolboxes' tools (:mod:`ws_mm.toolbox.launch`)."""
import gc

import torch
import torch.distributed as dist


def destroy_process_group() -> None:
    """``torch.distributed.destroy_process_group()``, its threads joined here,
    without the deadlock it can end in on older torch (2.0 among them).

    Destroying a group joins its backends' worker threads. A gloo worker may
    still be freeing the tensors of the last collective, which takes the
    GIL; until pytorch/pytorch#154976 the group's destructor holds the GIL
    while it joins, and both wait forever. Each backend's own Python handle
    releases the GIL when it goes, so the handles are held while the group
    goes and dropped last. In between, the garbage collector frees the
    reference cycles that keep the group alive (the toolbox runner's DDP
    wrapper): otherwise the threads would outlive this call.
    """
    if not dist.is_initialized():
        raise RuntimeError('destroy_process_group: there is no process group '
                           'to end (torch.distributed is not initialized)')
    backends = []  # no name for the group: it must go before the handles
    for device in ('cpu', 'cuda'):
        try:
            backends.append(
                dist.group.WORLD._get_backend(torch.device(device)))
        except RuntimeError:  # no backend for that device type
            pass
    dist.destroy_process_group()
    gc.collect()
    del backends  # joins the threads, the GIL released
