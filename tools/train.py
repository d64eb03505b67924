"""Train with mmdet's, mmseg's or mmpretrain's own tools/train.py, ws_mm
loaded.

    python tools/train.py CONFIG [toolbox arguments]

The toolbox is the config's default_scope; its arguments pass through
unchanged (tools/train.py CONFIG --help lists them). The config is checked
first, and CPU-only distributed runs are set up (see ws_mm.toolbox.launch).
"""
import sys

import ws_mm  # noqa: F401  (registers the layers before the config is read)
from ws_mm.toolbox.launch import run

if __name__ == '__main__':
    run('train', sys.argv[1:])
