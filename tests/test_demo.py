"""tools/demo.py end to end, reduced: 2-process training and testing of the
demo models on the shared demo data, metric files, pictures and the summary;
and the pretraining demo (classifier, then Mask R-CNN from its backbone)."""
import json
import sys

import pytest
import torch
from PIL import Image

pytestmark = [pytest.mark.e2e, pytest.mark.dist]


def test_reduced_demo_run(tmp_path, demo_data, run_tool):
    work = tmp_path / 'work'
    # The data options the shared data was written with: the demo's data
    # step finds it up to date instead of writing it again.
    proc = run_tool(
        [sys.executable, 'tools/demo.py', '--iters', '2', '--num-train',
         str(demo_data.num_train), '--num-val', str(demo_data.num_val),
         '--size', str(demo_data.size), '--data', str(demo_data.root),
         '--work-dir', str(work)], timeout=1800)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines()
              if 'Error' in line or line.startswith('[rank')]
    assert proc.returncode == 0, '\n'.join(
        errors[:40] + [proc.stdout[-2000:], proc.stderr[-2000:]])
    assert 'is up to date' in proc.stdout
    assert 'demo finished' in proc.stdout

    summary = json.loads((work / 'summary.json').read_text())
    assert 0.0 <= summary['det']['coco/bbox_mAP'] <= 1.0
    assert 0.0 <= summary['det']['coco/segm_mAP'] <= 1.0
    assert 0.0 <= summary['seg']['mIoU'] <= 100.0
    for task, metric in (('det', 'coco/bbox_mAP'), ('seg', 'mIoU')):
        metric_files = list((work / f'{task}_test').glob('*/*.log'))
        assert any(metric in f.read_text() for f in metric_files)
        pictures = [p for p in (work / f'{task}_test' / 'vis').rglob('*')
                    if p.suffix in ('.png', '.jpg')]
        assert pictures, f'no predictions drawn for {task}'
        assert Image.open(pictures[0]).size[0] > 0
        assert (work / task / 'iter_2.pth').is_file()
    assert Image.open(work / 'curves.png').size[0] > 0


def test_reduced_demo_pretrain_run(tmp_path, demo_data, run_tool):
    """make demo-pretrain, reduced: the classifier pretrained and tested on
    2 processes, then Mask R-CNN from its backbone and from scratch."""
    pytest.importorskip(
        'mmpretrain.models', exc_type=ImportError,
        reason='mmpretrain runs in .venv-oldest (make test-oldest)')
    work = tmp_path / 'work'
    proc = run_tool(
        [sys.executable, 'tools/demo.py', '--iters', '2', '--tasks', 'cls',
         'det-pretrained', 'det', '--num-train', str(demo_data.num_train),
         '--num-val', str(demo_data.num_val), '--size', str(demo_data.size),
         '--data', str(demo_data.root), '--work-dir', str(work)],
        timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((work / 'summary.json').read_text())
    assert 0.0 <= summary['cls']['accuracy/top1'] <= 100.0
    for task in ('det-pretrained', 'det'):
        assert 0.0 <= summary[task]['coco/bbox_mAP'] <= 1.0
    # the fine-tuned backbone started from the classifier's, every tensor
    classifier = torch.load(work / 'cls' / 'iter_2.pth')['state_dict']
    backbone = {k for k in classifier if k.startswith('backbone.')}
    logs = '\n'.join(p.read_text() for p in
                     (work / 'det-pretrained').glob('*/*.log'))
    assert (f"{work / 'cls' / 'iter_2.pth'}: {len(backbone)} tensors "
            'loaded (GN ResNet)') in logs
