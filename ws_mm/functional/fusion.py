"""Row-wise kernels fused by TorchInductor where that is faster, else eager.

Weight Standardization is memory-bound: every pass over a large weight costs
about as much as the arithmetic of the whole standardization. ``torch.compile``
fuses the eager ops of a kernel into a few loops over the rows (Triton
kernels on GPUs), but a compiled call has a fixed cost of its own, which
outweighs the fusion on small weights on CPU (``tools/benchmark_speed.py
--only kernel`` measures both; ``docs/benchmarks.md``).

:func:`set_compile` (or ``WS_MM_COMPILE`` in the environment) chooses:

* ``'auto'`` (default): compiled on GPUs, and on CPU for weights of at least
  the kernel's ``min_cpu_numel`` elements; eager below;
* ``'always'`` / ``'never'``: as named (``WS_MM_COMPILE=1`` / ``0``).

Compiling needs a C++ compiler (CPU) or Triton (GPU), and torch >= 2.4 (older
releases run eagerly). Where it fails, the same function runs eagerly from
then on, with one warning: identical math. The first compiled call of a
process compiles (seconds; TorchInductor caches the kernels on disk).
"""
import collections
import functools
import os
import warnings

import torch

_MODES = {'auto': 'auto', 'always': 'always', 'never': 'never', '1': 'always',
          '0': 'never'}
_TORCH_COMPILES = tuple(int(v) for v in torch.__version__.split('.')[:2]) >= (
    2, 4)
_mode = None  # set_compile's, else WS_MM_COMPILE's


def set_compile(mode: str) -> None:
    """Run WS's fused kernels compiled ``'always'``, ``'never'`` or where
    measured faster (``'auto'``, the default) in this process."""
    global _mode
    if mode not in _MODES:
        raise ValueError(f"set_compile: mode must be 'auto', 'always' or "
                         f"'never', got {mode!r}")
    _mode = _MODES[mode]


def compile_mode() -> str:
    """The mode in force: :func:`set_compile`'s, else ``WS_MM_COMPILE``'s."""
    if _mode is not None:
        return _mode
    env = os.environ.get('WS_MM_COMPILE', 'auto')
    if env not in _MODES:
        raise ValueError(f"WS_MM_COMPILE={env!r}: use auto, always (1) or "
                         'never (0)')
    return _MODES[env]


def compiling() -> bool:
    """Whether the calling code is being traced by ``torch.compile``."""
    return _TORCH_COMPILES and torch.compiler.is_compiling()


def fused(min_cpu_numel: int):
    """Decorate ``fn(tensor, ...)`` to run compiled (``dynamic=True``, once
    for every shape) or eagerly, by :func:`compile_mode`, the first
    argument's device and size.

    A compilation error disables compilation of ``fn`` for the process with
    one warning; a genuine error of ``fn`` is raised again by the eager call.
    Under TorchScript/ONNX tracing ``fn`` runs eagerly (tracers cannot enter a
    compiled function). ``calls`` of the result counts its calls by how they
    ran, ``'compiled'`` or ``'eager'``: what tests and benchmarks check.
    """
    def decorate(fn):
        compiled = None
        calls = collections.Counter()

        def wanted(first) -> bool:
            mode = compile_mode()
            if (mode == 'never' or compiled is False or not _TORCH_COMPILES
                    or torch.jit.is_tracing()):
                return False
            return (mode == 'always' or first.device.type != 'cpu'
                    or first.numel() >= min_cpu_numel)

        @functools.wraps(fn)
        def run(*args):
            nonlocal compiled
            if not wanted(args[0]):
                calls['eager'] += 1
                return fn(*args)
            if compiled is None:
                compiled = torch.compile(fn, dynamic=True)
            try:
                result = compiled(*args)
                calls['compiled'] += 1
                return result
            except Exception as error:  # noqa: BLE001 - any compiler failure
                compiled = False
                warnings.warn(
                    f'ws_mm: torch.compile failed for {fn.__name__} '
                    f'({type(error).__name__}: {str(error)[:200]}); running '
                    'it eagerly from now on (same results). Set '
                    'WS_MM_COMPILE=never to skip compilation.', RuntimeWarning)
                calls['eager'] += 1
                return fn(*args)

        run.calls = calls
        return run
    return decorate
