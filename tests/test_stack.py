"""The installed stack works as ws_mm needs it, and the set-up is idempotent."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import ws_mm

ROOT = Path(__file__).resolve().parents[1]


def test_mmcv_compiled_ops_run():
    from mmcv.ops import nms, roi_align
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.],
                          [20., 20., 30., 30.]])
    dets, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    feat = torch.arange(16.).view(1, 1, 4, 4)
    rois = torch.tensor([[0., 0., 0., 4., 4.]])
    out = roi_align(feat, rois, (2, 2), 1.0, 2, 'avg', True)
    assert out.shape == (1, 1, 2, 2)
    # The mean over the whole map equals the mean of the 4 pooled bins, up
    # to float32 rounding of the 16 bilinear samples of values <= 15 each.
    torch.testing.assert_close(out.mean(), feat.mean(), rtol=0,
                               atol=16 * torch.finfo(torch.float32).eps * 15)


def build_from_toolbox_config(path, scope):
    from mmengine.registry import MODELS
    cfg = Config.fromfile(path)
    init_default_scope(scope)
    cfg.model.backbone.init_cfg = None
    return MODELS.build(cfg.model)


def test_mmdet_model_builds_from_a_base_config(tmp_path):
    cfg = tmp_path / 'mask_rcnn.py'
    cfg.write_text("_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'\n")
    model = build_from_toolbox_config(str(cfg), 'mmdet')
    assert type(model).__name__ == 'MaskRCNN'


def test_mmseg_model_builds_from_a_base_config(tmp_path):
    cfg = tmp_path / 'deeplab.py'
    cfg.write_text("_base_ = 'mmseg::deeplabv3/"
                   "deeplabv3_r50-d8_4xb4-20k_voc12aug-512x512.py'\n"
                   "norm_cfg = dict(type='BN', requires_grad=True)\n"
                   "model = dict(pretrained=None, data_preprocessor=dict(size=(512, 512)))\n")
    model = build_from_toolbox_config(str(cfg), 'mmseg')
    assert type(model).__name__ == 'EncoderDecoder'


def test_one_cv2_folder_of_one_opencv_version():
    """mmcv requires opencv-python and mmaction2 opencv-contrib-python; both
    install into the same cv2 folder, which is whole when they are of one
    version (the set-up installs them in one pip run)."""
    import importlib.metadata as metadata

    import cv2
    import numpy as np
    versions = set()
    for dist in ('opencv-python', 'opencv-contrib-python'):
        try:
            versions.add(metadata.version(dist))
        except metadata.PackageNotFoundError:
            pass
    assert len(versions) == 1, versions
    assert versions.pop().startswith(cv2.__version__)
    image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    ok, png = cv2.imencode('.png', image)
    assert ok and np.array_equal(cv2.imdecode(png, cv2.IMREAD_COLOR), image)


def test_import_ws_mm_is_cheap_and_quiet():
    code = ('import sys, ws_mm; '
            'heavy = [m for m in ("mmdet", "mmseg", "mmcv.ops", "mmaction", '
            '"mmpretrain") '
            'if m in sys.modules]; print(heavy)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True, timeout=120)
    assert out.stdout.strip() == '[]', out.stdout
    assert out.stderr == ''


@pytest.mark.e2e
def test_pip_install_e_adds_ws_mm_alone():
    """In an environment that has the stack (this one: torch, a compiled
    mmcv 2.1), ``pip install -e .`` installs ws_mm and touches nothing else:
    setup.py's ranges admit what is there."""
    run = subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '--dry-run',
         '--disable-pip-version-check', '--no-build-isolation', '-e',
         str(ROOT)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    (line, ) = [line for line in run.stdout.splitlines()
                if line.startswith('Would install')]
    # pip spells the name ws_mm or ws-mm, by its version
    assert [name.replace('_', '-') for name in line.split()[2:]] == [
        f'ws-mm-{ws_mm.__version__}']


@pytest.mark.e2e
def test_setup_is_idempotent():
    """A second run decides that everything is there and installs nothing."""
    freeze = [sys.executable, '-m', 'pip', 'freeze', '--all']
    before = subprocess.run(freeze, capture_output=True, text=True,
                            timeout=120).stdout
    # The interpreter running the tests is the 3.11 the script asks for;
    # python3 on PATH need not be.
    env = dict(os.environ, PYTHON=sys.executable)
    # The stack of the environment running the tests.
    stack = 'oldest' if Path(sys.prefix) == ROOT / '.venv-oldest' else 'main'
    run = subprocess.run(['bash', str(ROOT / 'tools/setup_env.sh'), stack],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    decisions = [line for line in run.stdout.splitlines()
                 if line.startswith('[setup] ')]
    assert decisions, run.stdout
    acted = [d for d in decisions
             if not d.startswith(('[setup] have', '[setup] environment ready'))]
    assert acted == [], acted
    after = subprocess.run(freeze, capture_output=True, text=True,
                           timeout=120).stdout
    assert after == before
