"""Test with mmdet's, mmseg's or mmpretrain's own tools/test.py, ws_mm
loaded.

    python tools/test.py CONFIG CHECKPOINT [toolbox arguments]

The toolbox is the config's default_scope; its arguments pass through
unchanged (tools/test.py CONFIG CHECKPOINT --help lists them). The config and
the checkpoint are checked first, and CPU-only distributed runs are set up
(see ws_mm.toolbox.launch).
"""
import sys

import ws_mm  # noqa: F401  (registers the layers before the config is read)
from ws_mm.toolbox.launch import run

if __name__ == '__main__':
    run('test', sys.argv[1:])
