"""Argument checks shared by ws_mm's functions, layers and hooks: each raises
early, naming the owner, the argument and what it must be."""
from numbers import Real


def positive_int(owner: str, name: str, value) -> int:
    """``value`` if it is an int >= 1 (``True`` is not an int here)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f'{owner}: {name} must be a positive int, got '
                        f'{value!r} ({type(value).__name__})')
    if value < 1:
        raise ValueError(f'{owner}: {name} must be a positive int, got '
                         f'{value}')
    return value


def _real(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def rate(owner: str, name: str, value, allow_none: bool = False):
    """``value`` if it is a number in (0, 1], or ``None`` where allowed."""
    if value is None and allow_none:
        return value
    if not (_real(value) and 0 < value <= 1):
        also = ', or None' if allow_none else ''
        raise ValueError(f'{owner}: {name} must be in (0, 1] (e.g. 0.1)'
                         f'{also}, got {value!r}')
    return value


def non_negative(owner: str, name: str, value) -> float:
    """``value`` as a float if it is a number >= 0."""
    if not (_real(value) and value >= 0):
        raise ValueError(f'{owner}: {name} must be a float >= 0 (e.g. 1e-5), '
                         f'got {value!r}')
    return float(value)
