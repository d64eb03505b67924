"""Argument checks shared by ws_mm's functions, layers and hooks: each raises
early, naming the owner, the argument and what it must be; ``TypeError``
for a value of the wrong type (``True`` is not a number here),
``ValueError`` for one out of range."""
import math
from numbers import Real


def positive_int(owner: str, name: str, value) -> int:
    """``value`` if it is an int >= 1."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f'{owner}: {name} must be a positive int, got '
                        f'{value!r} ({type(value).__name__})')
    if value < 1:
        raise ValueError(f'{owner}: {name} must be a positive int, got '
                         f'{value}')
    return value


def _real(owner: str, name: str, value, must: str) -> float:
    if not isinstance(value, Real) or isinstance(value, bool):
        raise TypeError(f'{owner}: {name} must be {must}, got {value!r} '
                        f'({type(value).__name__})')
    return float(value)


def rate(owner: str, name: str, value, allow_none: bool = False):
    """``value`` if it is a number in (0, 1], or ``None`` where allowed."""
    if value is None and allow_none:
        return value
    must = 'in (0, 1] (e.g. 0.1)' + (', or None' if allow_none else '')
    if not 0 < _real(owner, name, value, must) <= 1:
        raise ValueError(f'{owner}: {name} must be {must}, got {value!r}')
    return value


def non_negative(owner: str, name: str, value) -> float:
    """``value`` as a float if it is a finite number >= 0."""
    must = 'a finite float >= 0 (e.g. 1e-5)'
    number = _real(owner, name, value, must)
    if not (number >= 0 and math.isfinite(number)):
        raise ValueError(f'{owner}: {name} must be {must}, got {value!r}')
    return number
