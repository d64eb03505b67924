"""tools/demo.py end to end, reduced: data tool, 2-process training and
testing of both demo models, metric files, pictures and the summary."""
import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_reduced_demo_run(tmp_path):
    work = tmp_path / 'work'
    proc = subprocess.run(
        [sys.executable, 'tools/demo.py', '--iters', '2', '--num-train', '8',
         '--num-val', '4', '--size', '128', '--data', str(tmp_path / 'data'),
         '--work-dir', str(work)],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines()
              if 'Error' in line or line.startswith('[rank')]
    assert proc.returncode == 0, '\n'.join(
        errors[:40] + [proc.stdout[-2000:], proc.stderr[-2000:]])
    assert 'demo finished' in proc.stdout

    summary = json.loads((work / 'summary.json').read_text())
    assert 0.0 <= summary['det']['coco/bbox_mAP'] <= 1.0
    assert 0.0 <= summary['det']['coco/segm_mAP'] <= 1.0
    assert 0.0 <= summary['seg']['mIoU'] <= 100.0
    for task, metric in (('det', 'coco/bbox_mAP'), ('seg', 'mIoU')):
        metric_files = list((work / f'{task}_test').glob('*/*.json'))
        assert any(metric in f.read_text() for f in metric_files)
        pictures = [p for p in (work / f'{task}_test' / 'vis').rglob('*')
                    if p.suffix in ('.png', '.jpg')]
        assert pictures, f'no predictions drawn for {task}'
        assert Image.open(pictures[0]).size[0] > 0
        assert (work / task / 'iter_2.pth').is_file()
    assert Image.open(work / 'curves.png').size[0] > 0
