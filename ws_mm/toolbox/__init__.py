"""Glue between ws_mm and the OpenMMLab toolboxes: registration, safe
checkpoint loading, config checks, hooks and the launch of their train/test
tools. Needs mmengine and mmcv; the layers (:mod:`ws_mm.layers`) do not.
Importing it registers the layers, hooks and ``AuthorsPretrained``."""
try:
    import mmcv  # noqa: F401
    import mmengine  # noqa: F401
except ModuleNotFoundError as error:
    raise ImportError(
        f'ws_mm.toolbox needs OpenMMLab, and {error.name} is not installed: '
        'pip install -e .[det,seg] (or mmengine and mmcv with its ops). '
        'The layers need torch alone: ws_mm.layers, ws_mm.functional') \
        from error

from . import hooks, recalibration, registry  # noqa: F401,E402  (register)
from .checkpoint import register_safe_loader  # noqa: E402
from . import upstream  # noqa: E402

register_safe_loader()
upstream.install()
