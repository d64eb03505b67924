"""Loading mmengine checkpoints safely on torch >= 2.6.

torch >= 2.6 loads with ``weights_only=True`` by default, which refuses the
few Python objects that mmengine's Runner puts into every checkpoint (the
message hub's ``HistoryBuffer`` and the numpy arrays inside it), so resuming,
``load_from`` and testing fail on the Runner's own files. Loading with
``weights_only=False`` would run any code pickled into the file. Instead, this
loader keeps ``weights_only=True`` and allows exactly the types mmengine's
checkpoints contain. A checkpoint with anything else is refused with the
names of the types and the explicit opt-in that loads it anyway. A
checkpoint cut short (an interrupted download or save) is named as such,
not left to torch's ``PytorchStreamReader`` error.

Importing ws_mm registers :func:`load_from_local_safely` as mmengine's loader
for local files, so the toolboxes' own tools benefit as well. On older torch,
whose ``torch.load`` unpickles anything by default, loading is left as the
toolboxes do it.
"""
import os
import os.path as osp
import zipfile
from typing import Any

import numpy as np
import torch

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
except ImportError:
    from numpy.core import multiarray as _multiarray
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import CheckpointLoader
from mmengine.utils import digit_version

#: torch.load's default, and what the toolboxes' checkpoints meet.
WEIGHTS_ONLY_BY_DEFAULT = digit_version(torch.__version__) >= digit_version(
    '2.6.0')

#: Set to 1 to load checkpoints with arbitrary pickled objects (trusted files only).
UNSAFE_LOAD_ENV = 'WS_MM_UNSAFE_LOAD'


def _history_buffer_method(owner, name: str):
    """The ``getattr`` a pickled ``HistoryBuffer`` needs, and nothing more.

    A HistoryBuffer pickles its statistics methods as ``getattr(HistoryBuffer,
    'mean')``; allowing the real ``getattr`` would reach any attribute of any
    loadable object.
    """
    if (owner is HistoryBuffer and not name.startswith('_')
            and callable(vars(HistoryBuffer).get(name))):
        return getattr(owner, name)
    raise ValueError(f'refusing getattr({owner!r}, {name!r}) in a checkpoint')


#: Exactly what mmengine 0.10's Runner checkpoints hold beyond tensors and
#: plain containers (found with ``torch.serialization.get_unsafe_globals_in_checkpoint``
#: and by loading Runner checkpoints).
MMENGINE_CHECKPOINT_GLOBALS = [
    HistoryBuffer,
    np.ndarray,
    np.dtype,
    _multiarray._reconstruct,
    _multiarray.scalar,
    (_history_buffer_method, 'builtins.getattr'),
] + [  # the dtype classes of numeric arrays (numpy >= 1.25 pickles them)
    type(np.dtype(code))
    for code in np.typecodes['AllInteger'] + np.typecodes['AllFloat'] + '?'
]

_ALLOWED_NAMES = {
    'builtins.getattr', '__builtin__.getattr', *(
        f'{g.__module__}.{g.__qualname__}'
        for g in MMENGINE_CHECKPOINT_GLOBALS if not isinstance(g, tuple))
}


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint holds pickled objects that ws_mm does not load by default."""


class IncompleteCheckpointError(RuntimeError):
    """A checkpoint file ends before its data does (cut short)."""


#: How torch.save's files (torch >= 1.6) begin; older ones are pickles.
ZIP_MAGIC = b'PK\x03\x04'


def load_checkpoint_file(filename: str, map_location: Any = None) -> Any:
    """``torch.load`` with ``weights_only=True`` plus mmengine's own types
    (before torch 2.6: ``torch.load`` as the toolboxes call it)."""
    try:
        if not WEIGHTS_ONLY_BY_DEFAULT or os.environ.get(
                UNSAFE_LOAD_ENV) == '1':
            return torch.load(filename, map_location=map_location,
                              weights_only=False)
        with torch.serialization.safe_globals(MMENGINE_CHECKPOINT_GLOBALS):
            return torch.load(filename, map_location=map_location,
                              weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, wrapped
        check_checkpoint_is_complete(filename)
        check_checkpoint_is_safe(filename)
        raise error


def check_checkpoint_is_complete(filename: str) -> None:
    """Raise :class:`IncompleteCheckpointError` if ``filename`` is empty or
    a zip checkpoint whose end is missing, without loading it.

    torch.save writes a zip archive whose directory is at its end, so a file
    cut anywhere lacks it; torch then fails with "PytorchStreamReader failed
    reading zip archive". Legacy (pickle) checkpoints are not zips and are
    left to torch.
    """
    if not isinstance(filename, (str, os.PathLike)) or not osp.isfile(
            filename):
        return  # torch.load says what is wrong
    size = osp.getsize(filename)
    with open(filename, 'rb') as f:
        head = f.read(len(ZIP_MAGIC))
    if size and not ZIP_MAGIC.startswith(head):
        return  # a legacy checkpoint, or no checkpoint: torch says which
    if size >= len(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(filename):  # reads the directory only
                return
        except (zipfile.BadZipFile, OSError, ValueError):
            pass
    raise IncompleteCheckpointError(
        f'checkpoint {str(filename)!r} is incomplete ({size} bytes, its zip '
        'archive cut short, as by an interrupted download or save); '
        'download or save it again, or use another checkpoint')


def check_checkpoint_is_safe(filename: str) -> None:
    """Raise :class:`UnsafeCheckpointError` if loading ``filename`` would
    need pickled types beyond mmengine's own, without loading it."""
    if not WEIGHTS_ONLY_BY_DEFAULT or os.environ.get(UNSAFE_LOAD_ENV) == '1':
        return
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(filename)
    except Exception:  # not a zip checkpoint: torch.load says what is wrong
        return
    foreign = [name for name in found if name not in _ALLOWED_NAMES]
    if foreign:
        raise UnsafeCheckpointError(
            f'{filename} contains pickled objects of types '
            f'{", ".join(foreign)}, which are not loaded by default since '
            'unpickling them can run arbitrary code. If you trust this '
            f'file, set {UNSAFE_LOAD_ENV}=1 to load it anyway.')


def load_from_local_safely(filename: str, map_location: Any = None) -> Any:
    """mmengine's local-file loader, loading with :func:`load_checkpoint_file`."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return load_checkpoint_file(filename, map_location)


def register_safe_loader() -> None:
    """Make mmengine load local checkpoints with :func:`load_from_local_safely`
    where ``torch.load`` is weights-only by default."""
    if not WEIGHTS_ONLY_BY_DEFAULT:
        return
    CheckpointLoader.register_scheme(prefixes='', force=True)(
        load_from_local_safely)
