"""The package's data flows one way, down: the math in functional/, modules in
layers/, then the torch-only tools (deploy, distributed, recalibration) and
the OpenMMLab glue in toolbox/. Read from the import statements of the
source, so a new upward import fails here; and checked by importing the
package with OpenMMLab blocked, as a plain PyTorch user has it."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'ws_mm'
# Each part may import the parts before it, never those after it.
ORDER = ['version', 'functional', 'layers', 'deploy', 'distributed',
         'recalibration', 'toolbox']
TORCH_ONLY = {'torch'}
# What each part may import from outside ws_mm besides the standard library.
THIRD_PARTY = dict.fromkeys(ORDER, TORCH_ONLY)
THIRD_PARTY['version'] = set()
THIRD_PARTY['toolbox'] = {'torch', 'mmengine', 'mmcv', 'mmdet', 'mmseg',
                          'mmaction', 'numpy'}
OPENMMLAB = ('mmengine', 'mmcv', 'mmdet', 'mmseg')


def part_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix('.py')


def imports(tree: ast.AST, path: Path):
    """(top-level package, ws_mm part or None) of every import in ``tree``."""
    here = path.relative_to(PACKAGE.parent).with_suffix('').parts
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                base = list(here[:len(here) - node.level])
                names = ['.'.join(base + ([node.module] if node.module else
                                          []))]
                if not node.module:
                    names = [f'{names[0]}.{a.name}' for a in node.names]
            else:
                names = [node.module]
        else:
            continue
        for name in names:
            parts = name.split('.')
            yield parts[0], (parts[1] if parts[0] == 'ws_mm' and len(parts) > 1
                             else None)


ROOT_INIT = PACKAGE / '__init__.py'
SOURCES = sorted(p for p in PACKAGE.rglob('*.py') if p != ROOT_INIT)


@pytest.mark.parametrize('path', SOURCES,
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    part = part_of(path)
    tree = ast.parse(path.read_text(), feature_version=(3, 10))
    for top, target in imports(tree, path):
        if top == 'ws_mm':
            assert target in ORDER[:ORDER.index(part) + 1], (
                f'{path.name} ({part}) imports ws_mm.{target}: upward')
        else:
            assert top in sys.stdlib_module_names or top in THIRD_PARTY[part], (
                f'{path.name} ({part}) imports {top}')


def test_the_package_imports_openmmlab_only_where_it_is_installed():
    """ws_mm/__init__.py: the torch-only parts unconditionally, OpenMMLab
    (toolbox/, mmcv) only in the ``else`` of a ``try`` that lets a missing
    mmcv pass."""
    tree = ast.parse(ROOT_INIT.read_text(), feature_version=(3, 10))
    for node in tree.body:
        if isinstance(node, ast.Try):  # the guard
            continue
        for top, target in imports(node, ROOT_INIT):
            assert top == 'ws_mm' and THIRD_PARTY[target] <= TORCH_ONLY, (
                f'ws_mm/__init__.py imports {top}.{target} unguarded')


BLOCK_OPENMMLAB = f'''
import sys
for name in {OPENMMLAB!r}:
    sys.modules[name] = None  # "import mmcv" raises ModuleNotFoundError
'''


def python(code):
    return subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True)


def test_the_layers_import_and_run_with_openmmlab_blocked():
    proc = python(BLOCK_OPENMMLAB + '''
import torch
import ws_mm
import ws_mm.functional
from ws_mm.layers import BatchChannelNorm, ConvWS2d
from ws_mm import (destroy_process_group, fold_weight_standardization,
                   recalibrate_norm_statistics)
x = torch.randn(2, 8, 6, 6)
model = torch.nn.Sequential(ConvWS2d(8, 8, 3), BatchChannelNorm(8, 4))
model(x).sum().backward()
recalibrate_norm_statistics(model, [x])
fold_weight_standardization(model.eval())
loaded = sorted(m for m in sys.modules if m.split('.')[0] in
                ('mmengine', 'mmcv', 'mmdet', 'mmseg') and sys.modules[m])
print('loaded:', loaded, 'toolbox' in dir(ws_mm))
''')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == 'loaded: [] False'


def test_the_toolbox_says_it_needs_openmmlab():
    proc = python(BLOCK_OPENMMLAB + 'import ws_mm.toolbox.checks\n')
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        'ImportError: ws_mm.toolbox needs OpenMMLab, and mmcv is not '
        'installed: pip install -e .[det,seg] (or mmengine and mmcv with its '
        'ops). The layers need torch alone: ws_mm.layers, ws_mm.functional')


def test_with_openmmlab_importing_ws_mm_registers():
    proc = python('''
from mmengine.registry import HOOKS, MODELS, WEIGHT_INITIALIZERS
import ws_mm
from ws_mm.layers import BatchChannelNorm, ConvWS2d
print(MODELS.get('ConvWS') is ConvWS2d, MODELS.get('BCN') is BatchChannelNorm,
      HOOKS.get('WSGradientHook') is not None,
      WEIGHT_INITIALIZERS.get('AuthorsPretrained') is not None)
''')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ['True'] * 4
