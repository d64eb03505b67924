"""BCN's kernels: on CPU compiled, elsewhere passes of torch's kernels.

On CPU, :func:`~ws_mm.functional.batch_channel_norm` runs as
``bcn_kernels.cpp``, which torch's extension loader builds on first use (a
C++ compiler and ninja; once per torch version, in torch's extension
cache): ``bcn``, an autograd function whose forward and backward read each
group's block of the input once from memory, as group norm's kernel does,
and which updates running estimates in place; and the rows' moments alone.
On a GPU, or if that build fails (a warning says why), BCN reads and writes
activations only through the four passes of :class:`TorchKernels` over its
input's ``(sample, channel)`` rows: contiguous ``(R, L)`` tensors of the
statistics' dtype, with per-row coefficients ``(R,)``.
"""
import functools
import re
import warnings
from pathlib import Path
from typing import Tuple

import torch
from torch import Tensor

# Whether the C++ kernels are used where they apply (tests and benchmarks
# switch it off to compare).
USE_COMPILED = True


def _affine(rows: Tensor, weight: Tensor, bias: Tensor,
            shape=None) -> Tensor:
    """``weight * rows + bias`` per row, of ``shape`` (by default the
    rows'): torch's batch-norm kernel in eval mode with the rows as
    channels, one pass (a multiply-add broadcasting its coefficients is
    slower on CPU)."""
    count, length = rows.shape
    out = rows.new_empty(shape or rows.shape)
    # into out: a view of the kernel's own output, returned from BCN's
    # autograd Function, could not be modified in place
    torch.ops.aten.native_batch_norm.out(
        rows.view(1, count, length), weight, bias, rows.new_zeros(count),
        rows.new_ones(count), False, 0.0, 0.0,
        out=out.view(1, count, length), save_mean=rows.new_empty(0),
        save_invstd=rows.new_empty(0))
    return out


class TorchKernels:
    """The four passes with torch's kernels, on any device and dtype."""

    @staticmethod
    def row_moments(rows: Tensor) -> Tuple[Tensor, Tensor]:
        """Mean and biased variance of each row."""
        count, length = rows.shape
        # group norm with a group per row; its normalized rows are dropped
        _, mean, rstd = torch.ops.aten.native_group_norm(
            rows.view(1, count, length), None, None, 1, count, length, count,
            0.0)
        return mean.view(count), rstd.view(count).pow(-2)

    @staticmethod
    def row_affine(rows: Tensor, mean: Tensor, a: Tensor, b: Tensor,
                   shape=None) -> Tensor:
        """``a * (rows - mean) + b`` per row, of ``shape`` (by default the
        rows')."""
        return _affine(rows, a, torch.addcmul(b, a, mean, value=-1), shape)

    @staticmethod
    def row_sums(grad: Tensor, rows: Tensor,
                 mean: Tensor) -> Tuple[Tensor, Tensor]:
        """Per row, the sums of ``grad`` and of ``grad * (rows - mean)``."""
        # batch norm's backward with the rows as channels: one pass, no
        # product tensor
        count, length = rows.shape
        _, sum_grad_x, sum_grad = torch.ops.aten.native_batch_norm_backward(
            grad.view(1, count, length), rows.view(1, count, length), None,
            None, None, mean, grad.new_ones(count), True, 0.0,
            [False, True, True])
        return sum_grad, sum_grad_x

    @staticmethod
    def grad_rows(grad: Tensor, rows: Tensor, mean: Tensor, a: Tensor,
                  p: Tensor, q: Tensor) -> Tensor:
        """``a * grad + p * (rows - mean) + q`` per row."""
        return TorchKernels.row_affine(rows, mean, p, q).addcmul_(
            a[:, None], grad)


def _vector_flags():
    """AVX2 where torch found it on this CPU (torch >= 2.1 says), else the
    compiler's default: a build is only loaded where its flags run."""
    capability = getattr(getattr(torch.backends, 'cpu', None),
                         'get_cpu_capability', lambda: 'DEFAULT')()
    return ['-mavx2', '-mfma'] if capability in ('AVX2', 'AVX512') else []


@functools.lru_cache(maxsize=None)
def _compiled():
    """``bcn_kernels.cpp`` built and loaded, or ``None`` with a warning."""
    from torch.utils.cpp_extension import load

    flags = _vector_flags()
    # one build per torch version and flags: torch's extension cache is
    # shared by environments (and by machines with a shared home)
    name = re.sub(r'\W', '_', '_'.join(
        ['ws_mm_bcn_kernels', torch.__version__, *flags]))
    try:
        return load(name, [str(Path(__file__).with_suffix('.cpp'))],
                    extra_cflags=['-O3', '-fopenmp', *flags],
                    extra_ldflags=['-fopenmp'], verbose=False)
    except Exception as error:  # no compiler, no ninja, a failed build
        reason = (str(error).strip().splitlines() or [type(error).__name__])
        warnings.warn(
            f'ws_mm: BatchChannelNorm runs on torch kernels, slower: its CPU '
            f'kernels (ws_mm/functional/bcn_kernels.cpp) did not build: '
            f'{reason[0][:300]}. They need GCC or Clang and ninja (pip '
            f'install ninja).')
        return None


# BCN computes statistics of these in float32 or float64
_FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def compiled_for(x: Tensor):
    """The C++ kernels if they apply to ``x`` (a floating CPU tensor) and
    are built, else ``None``."""
    if USE_COMPILED and x.is_cpu and x.dtype in _FLOATING:
        return _compiled()
    return None
