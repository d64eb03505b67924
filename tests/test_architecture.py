"""The package's data flows one way, down: the math in functional/, modules in
layers/, then deploy and the OpenMMLab glue in toolbox/. Read from the import
statements of the source, so a new upward import fails here."""
import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'ws_mm'
# Each part may import the parts before it, never those after it.
ORDER = ['functional', 'layers', 'deploy', 'toolbox']
# What each part may import from outside ws_mm besides the standard library.
THIRD_PARTY = {
    'functional': {'torch'},
    'layers': {'torch'},
    'deploy': {'torch'},
    'toolbox': {'torch', 'mmengine', 'mmcv', 'mmdet', 'mmseg', 'numpy'},
}


def part_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix('.py')


def imports(path: Path):
    """(top-level package, ws_mm part or None) of every import in a file."""
    here = path.relative_to(PACKAGE.parent).with_suffix('').parts
    for node in ast.walk(ast.parse(path.read_text())):
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


SOURCES = sorted(p for p in PACKAGE.rglob('*.py') if p.parent != PACKAGE
                 or p.name == 'deploy.py')


@pytest.mark.parametrize('path', SOURCES,
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    part = part_of(path)
    for top, target in imports(path):
        if top == 'ws_mm':
            assert target in ORDER[:ORDER.index(part) + 1], (
                f'{path.name} ({part}) imports ws_mm.{target}: upward')
        else:
            assert top in sys.stdlib_module_names or top in THIRD_PARTY[part], (
                f'{path.name} ({part}) imports {top}')
