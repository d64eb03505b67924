"""Row-wise kernels fused by TorchInductor, with the eager function as fallback.

Weight Standardization is memory-bound: every pass over a large weight costs
about as much as the arithmetic of the whole standardization. Written as
eager torch ops, the closed-form backward makes several passes over the
weight; ``torch.compile`` fuses them into a few loops over the rows that
write one result (Triton kernels on GPUs). On CPU that measured 0.63x-0.96x
the eager time at ResNet-50's weights in one run and 0.63x-1.65x in another
(``tools/benchmark_speed.py --only kernel``): a clear gain on the largest
weights, where the time is, while on small ones the compiled call's own
overhead (~0.1 ms) can outweigh what it saves.

Compilation needs a C++ compiler (CPU) or Triton (GPU). Where it fails, or
with ``WS_MM_COMPILE=0`` in the environment, the same function runs eagerly:
identical math. The first call of a process compiles (seconds; the
kernels are cached on disk by TorchInductor for later processes).
"""
import functools
import os
import warnings

import torch


def _enabled() -> bool:
    return os.environ.get('WS_MM_COMPILE', '1') != '0'


def fused(fn):
    """``fn`` compiled once for every shape (``dynamic=True``), else eager.

    A compilation error disables compilation of ``fn`` for the process with
    one warning; a genuine error of ``fn`` is raised again by the eager call.
    Under TorchScript/ONNX tracing ``fn`` runs eagerly (tracers cannot enter a
    compiled function).
    """
    compiled = None

    @functools.wraps(fn)
    def run(*args):
        nonlocal compiled
        if not _enabled() or torch.jit.is_tracing() or compiled is False:
            return fn(*args)
        if compiled is None:
            compiled = torch.compile(fn, dynamic=True)
        try:
            return compiled(*args)
        except Exception as error:  # noqa: BLE001 - any compiler failure
            compiled = False
            warnings.warn(
                f'ws_mm: torch.compile failed for {fn.__name__} '
                f'({type(error).__name__}: {str(error)[:200]}); running it '
                'eagerly from now on (same results). Set '
                'WS_MM_COMPILE=0 to skip compilation.', RuntimeWarning)
            return fn(*args)

    run.eager = fn
    return run
