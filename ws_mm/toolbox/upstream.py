"""mmaction2 1.2.0 made importable as packaged.

mmaction2 1.2.0 is the only release that accepts mmcv 2.1. Two things keep
``import mmaction.models`` from working in a plain install:

- its wheel and sdist lack ``mmaction/models/localizers/drn/`` (upstream
  issue open-mmlab/mmaction2#2714), which ``mmaction.models.localizers``
  imports;
- where mmpretrain is installed, mmaction (and mmdet, which it imports)
  import ``mmpretrain.models`` and catch only ImportError, while mmpretrain's
  torchvision import raises RuntimeError when torchvision is not the build
  of the installed torch.

Importing ``ws_mm`` puts a finder first on ``sys.meta_path`` that answers
for these module names only. For ``drn`` it stands in only when the normal
import finds nothing, and the stand-in holds nothing of mmaction2: a ``DRN``,
registered as the real one is, that says why it cannot be built. For
``mmpretrain.models`` it runs the normal import and turns any other failure
into an ImportError that names the cause and the fix (and warns, since the
callers swallow it): mmaction and mmdet then run without mmpretrain's parts.
"""
import importlib.abc
import importlib.machinery
import sys
import warnings

DRN_PACKAGE = 'mmaction.models.localizers.drn'
DRN_MODULE = DRN_PACKAGE + '.drn'
MMPRETRAIN_MODELS = 'mmpretrain.models'


class DRN:
    """Stand-in for mmaction2's temporal grounding model DRN."""

    def __init__(self, *args, **kwargs):
        raise ImportError(
            'DRN is missing from the mmaction2 1.2.0 package (its '
            'models/localizers/drn folder is not in the wheel or the sdist; '
            'open-mmlab/mmaction2#2714): install mmaction2 from its git '
            'source to use DRN')


class _ImportErrorOnly(importlib.abc.Loader):
    """A module's own loader, with any failure but ImportError turned into
    an ImportError that says why."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):  # get_filename, resources, ...
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        try:
            self.loader.exec_module(module)
        except ImportError:
            raise
        except Exception as error:  # noqa: BLE001  (what callers let through)
            message = (
                f'import {module.__name__} failed with '
                f'{type(error).__name__}: {error}. Usually torchvision is not '
                'the build of the installed torch: install the torchvision '
                'release made for it, or uninstall mmpretrain.')
            warnings.warn(message + ' mmdet and mmaction go on without '
                          "mmpretrain's parts.", stacklevel=2)
            raise ImportError(message, name=module.__name__) from error


class _UpstreamFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):

    def find_spec(self, name, path=None, target=None):
        if name not in (DRN_PACKAGE, DRN_MODULE, MMPRETRAIN_MODELS):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if name == MMPRETRAIN_MODELS:
            if spec is not None:
                spec.loader = _ImportErrorOnly(spec.loader)
            return spec
        if spec is not None:
            return None  # a release that has it
        return importlib.machinery.ModuleSpec(name, self,
                                              is_package=name == DRN_PACKAGE)

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module):
        if module.__name__ == DRN_MODULE:
            from mmaction.registry import MODELS

            MODELS.register_module('DRN', module=DRN)
            module.DRN = DRN


def install() -> None:
    """Put the finder first on ``sys.meta_path``, once."""
    if not any(isinstance(f, _UpstreamFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _UpstreamFinder())
