"""tools/make_demo_data.py writes COCO and VOC data that the toolboxes' own
dataset classes and metrics read unchanged, object crops in the ImageNet
layout, and clips as Something-Something-style rawframes whose labels are
the motions in them.

Most tests read the run's shared demo data (conftest.py's ``demo_data``); the
tests of determinism and of the command line write their own.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

import devkit


@pytest.fixture(scope='module')
def tool(load_tool):
    return load_tool('make_demo_data')


@pytest.fixture(scope='module')
def demo(demo_data):
    return demo_data.root


@pytest.fixture(scope='module')
def photos(tool):
    return tool.load_photos()


@pytest.fixture(scope='module')
def scene(tool, photos, demo_data):
    """(image, labels, masks) of the scene behind an image of the data."""
    def scene(split, image_id):
        index = image_id - 1 - (tool.VAL_ID_OFFSET if split == 'val' else 0)
        return tool.make_scene(demo_data.seed, split, index, demo_data.size,
                               photos)
    return scene


def num(data, split):
    return data.num_train if split == 'train' else data.num_val


def painted(labels, masks, shape):
    """Class per pixel, later objects on top: the truth without void."""
    label_map = np.zeros(shape, np.uint8)
    for label, mask in zip(labels, masks):
        label_map[mask] = label
    return label_map


def coco_json(demo, split):
    return demo / 'coco' / 'annotations' / f'instances_{split}2017.json'


def voc_names(demo, split):
    path = demo / 'VOCdevkit/VOC2012/ImageSets/Segmentation' / f'{split}.txt'
    return path.read_text().split()


def voc_png(demo, name):
    return Image.open(
        demo / 'VOCdevkit/VOC2012/SegmentationClass' / f'{name}.png')


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


# ----------------------------------------------------------------- COCO --


@pytest.mark.parametrize('split', ['train', 'val'])
def test_coco_loads_with_pycocotools_and_matches_the_scenes(
        tool, demo_data, demo, scene, split):
    coco = COCO(str(coco_json(demo, split)))
    assert len(coco.imgs) == num(demo_data, split)
    assert {c['id']: c['name'] for c in coco.cats.values()} == dict(
        enumerate(tool.COCO_CLASSES, 1))
    occluded = 0
    for img_id, info in coco.imgs.items():
        path = demo / 'coco' / f'{split}2017' / info['file_name']
        assert Image.open(path).size == (info['width'], info['height'])
        assert max(info['width'], info['height']) == demo_data.size
        image, labels, masks = scene(split, img_id)
        # The JPEG is that scene (up to compression, which smooths noise).
        assert np.abs(np.asarray(Image.open(path))[..., ::-1] -
                      image.astype(float)).mean() < 8
        visible = tool.visible_masks(masks)
        occluded += sum(v.sum() < m.sum() for v, m in zip(visible, masks))
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        for ann in anns:
            assert ann['iscrowd'] == 0 and ann['area'] > 0
            assert all(len(p) >= 6 and len(p) % 2 == 0
                       for p in ann['segmentation'])
            mask = coco.annToMask(ann).astype(bool)
            assert ann['area'] == mask.sum()  # as COCO's: pixels
            ys, xs = np.nonzero(mask)
            x, y, w, h = ann['bbox']
            assert w >= 1 and h >= 1
            # The bbox is the box of the mask's pixels.
            assert (xs.min(), ys.min()) == (x, y)
            assert (xs.max() + 1, ys.max() + 1) == (x + w, y + h)
            # The polygons trace the VISIBLE part of an object of its class
            # (exactly, but for crumbs of a few pixels that are dropped).
            best = max(iou(mask, v) for label, v in zip(labels, visible)
                       if label == ann['category_id'])
            assert best > 0.97
        # Every clearly visible object is annotated, none twice.
        clear = sum(v.sum() > 0.3 * m.sum() and v.sum() > 50
                    for v, m in zip(visible, masks))
        assert clear <= len(anns) <= len(masks)
    assert len(coco.anns) > num(demo_data, split)  # several per image
    assert occluded > 0  # so the visible-part checks above mean something


def test_coco_drops_almost_fully_occluded_instances(tool):
    mask = np.zeros((40, 40), bool)
    mask[5:35, 5:35] = True
    visible = mask.copy()
    visible[:33] = False  # 2 of 30 rows left: under 10 % visible
    assert tool.coco_annotation(visible, mask) is None
    visible = mask.copy()
    visible[25:] = False
    ann = tool.coco_annotation(visible, mask)
    assert ann['bbox'] == [5.0, 5.0, 30.0, 20.0]
    assert ann['area'] == 30 * 20  # COCO's area: the pixel count
    # Vertices sit a quarter pixel inside the pixel edges, so that COCO's
    # rasterization gives back exactly these pixels.
    rle = mask_utils.merge(mask_utils.frPyObjects(ann['segmentation'], 40, 40))
    np.testing.assert_array_equal(mask_utils.decode(rle), visible)


def test_mmdet_coco_dataset_reads_it(tool, demo_data, demo):
    from mmcv.transforms import LoadImageFromFile
    from mmdet.datasets import CocoDataset
    from mmdet.datasets.transforms import LoadAnnotations

    raw = json.loads(coco_json(demo, 'train').read_text())
    dataset = CocoDataset(
        data_root=str(demo / 'coco'),
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        metainfo=dict(classes=tool.COCO_CLASSES),
        pipeline=[dict(type=LoadImageFromFile),
                  dict(type=LoadAnnotations, with_bbox=True, with_mask=True,
                       poly2mask=False)],
        test_mode=False)
    assert len(dataset) == demo_data.num_train
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    assert sum(len(i['instances']) for i in infos) == len(raw['annotations'])
    sample = dataset[0]
    h, w = sample['img'].shape[:2]
    assert (w, h) == (raw['images'][0]['width'], raw['images'][0]['height'])
    n = len(infos[0]['instances'])
    assert n > 0 and len(sample['gt_masks']) == n
    assert sample['gt_bboxes'].tensor.shape == (n, 4)
    assert set(sample['gt_bboxes_labels'].tolist()) <= set(range(5))


def gt_as_predictions(coco, img_id):
    info = coco.imgs[img_id]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
    bboxes = [[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in anns)]
    masks = np.zeros((len(anns), info['height'], info['width']), bool)
    for mask, ann in zip(masks, anns):
        mask[:] = coco.annToMask(ann)
    return dict(
        img_id=img_id, ori_shape=(info['height'], info['width']),
        pred_instances=dict(
            bboxes=torch.tensor(bboxes, dtype=torch.float32).view(-1, 4),
            scores=torch.ones(len(anns)),
            labels=torch.tensor([a['category_id'] - 1 for a in anns],
                                dtype=torch.long),
            masks=torch.from_numpy(masks)))


def test_ground_truth_scores_ap_1_in_mmdet_coco_metric(tool, demo):
    from mmdet.evaluation import CocoMetric

    ann_file = str(coco_json(demo, 'val'))
    coco = COCO(ann_file)
    metric = CocoMetric(ann_file=ann_file, metric=['bbox', 'segm'])
    metric.dataset_meta = dict(classes=tool.COCO_CLASSES)
    samples = [gt_as_predictions(coco, i) for i in sorted(coco.imgs)]
    metric.process({}, samples)
    result = metric.evaluate(size=len(samples))
    assert result['coco/bbox_mAP'] == 1.0
    assert result['coco/segm_mAP'] == 1.0
    # Control: with one image's predictions missing, recall drops below 1.
    samples[0]['pred_instances'] = {
        k: v[:0] for k, v in samples[0]['pred_instances'].items()}
    metric.process({}, samples)
    result = metric.evaluate(size=len(samples))
    assert result['coco/bbox_mAP'] < 1.0 and result['coco/segm_mAP'] < 1.0


# ------------------------------------------------------------------ VOC --


@pytest.mark.parametrize('split', ['train', 'val'])
def test_voc_maps_are_palette_pngs_of_the_drawn_classes(tool, demo_data, demo,
                                                         scene, split):
    from mmseg.datasets import PascalVOCDataset

    assert tool.VOC_CLASSES == PascalVOCDataset.METAINFO['classes'][:6]
    names = voc_names(demo, split)
    assert len(names) == num(demo_data, split)
    voc_palette = np.array(PascalVOCDataset.METAINFO['palette'], np.uint8)
    for name in names:
        png = voc_png(demo, name)
        assert png.mode == 'P'
        palette = np.array(png.getpalette(), np.uint8).reshape(-1, 3)
        np.testing.assert_array_equal(palette[:21], voc_palette)
        assert palette[255].tolist() == [224, 224, 192]  # VOC's void colour
        seg = np.asarray(png)
        image, labels, masks = scene(split, int(name))
        truth = painted(labels, masks, image.shape[:2])
        # A pixel is on a boundary if one of its 8 neighbours differs.
        padded = np.pad(truth, 1, mode='edge')
        h, w = truth.shape
        boundary = np.zeros_like(truth, bool)
        for dy in range(3):
            for dx in range(3):
                boundary |= padded[dy:dy + h, dx:dx + w] != truth
        assert (seg == 255).any()
        np.testing.assert_array_equal(seg == 255, boundary)
        np.testing.assert_array_equal(seg[~boundary], truth[~boundary])
        assert set(np.unique(seg)) - {255} <= {0, *labels}


def test_mmseg_voc_dataset_reads_it(demo_data, demo):
    from mmcv.transforms import LoadImageFromFile
    from mmseg.datasets import PascalVOCDataset
    from mmseg.datasets.transforms import LoadAnnotations

    root = demo / 'VOCdevkit' / 'VOC2012'
    for split in ('train', 'val'):
        dataset = PascalVOCDataset(
            data_root=str(root),
            data_prefix=dict(img_path='JPEGImages',
                             seg_map_path='SegmentationClass'),
            ann_file=f'ImageSets/Segmentation/{split}.txt',
            pipeline=[dict(type=LoadImageFromFile),
                      dict(type=LoadAnnotations)])
        assert len(dataset) == num(demo_data, split)
    sample = dataset[0]
    name = Path(sample['img_path']).stem
    np.testing.assert_array_equal(sample['gt_seg_map'],
                                  np.asarray(voc_png(demo, name)))
    assert sample['img'].shape[:2] == sample['gt_seg_map'].shape
    # Same scenes as COCO: byte-identical JPEGs.
    assert (root / 'JPEGImages' / f'{name}.jpg').read_bytes() == (
        demo / 'coco' / 'val2017' / f'{name}.jpg').read_bytes()


def test_ground_truth_scores_miou_100_in_mmseg_iou_metric(demo, scene):
    from mmseg.datasets import PascalVOCDataset
    from mmseg.evaluation import IoUMetric

    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dict(classes=PascalVOCDataset.METAINFO['classes'])
    samples = []
    for name in voc_names(demo, 'val'):
        gt = np.asarray(voc_png(demo, name)).astype(np.int64)
        # Predict the truth without void: void pixels must be ignored.
        pred = painted(*scene('val', int(name))[1:], gt.shape)
        samples.append(dict(
            pred_sem_seg=dict(data=torch.from_numpy(pred[None]).long()),
            gt_sem_seg=dict(data=torch.from_numpy(gt[None]))))
    metric.process({}, samples)
    assert metric.evaluate(len(samples))['mIoU'] == 100.0
    # Control: predicting background everywhere is far from perfect.
    for sample in samples:
        sample['pred_sem_seg']['data'] = torch.zeros_like(
            sample['pred_sem_seg']['data'])
    metric.process({}, samples)
    assert metric.evaluate(len(samples))['mIoU'] < 50


# ------------------------------------------------------------ rawframes --


def rawframes_list(demo, split):
    """(folder, frames, label) of each line of a split's list."""
    return [(name, int(frames), int(label)) for name, frames, label in (
        line.split() for line in
        (demo / 'sth' / f'{split}.txt').read_text().splitlines())]


def test_rawframes_lists_name_every_folder_and_frame(tool, demo_data, demo):
    listed = set()
    for split in ('train', 'val'):
        clips = rawframes_list(demo, split)
        # a clip per scene and motion, named after both
        assert sorted(name for name, _, _ in clips) == sorted(
            f'{tool.image_id(split, i):012d}_{motion}'
            for i in range(num(demo_data, split)) for motion in tool.MOTIONS)
        for name, frames, label in clips:
            assert name == f'{name.split("_")[0]}_{tool.MOTIONS[label]}'
            assert tool.CLIP_FRAMES[0] <= frames <= tool.CLIP_FRAMES[1]
            files = sorted((demo / 'sth' / 'rawframes' / name).iterdir())
            assert [f.name for f in files] == [
                tool.FRAME_TMPL.format(t) for t in range(1, frames + 1)]
            assert Image.open(files[0]).size == (tool.FRAME_SIZE, ) * 2
        listed |= {name for name, _, _ in clips}
    assert listed == {p.name for p in (demo / 'sth' / 'rawframes').iterdir()}


# What each motion's name means in image coordinates: (x, y), y down.
WAYS = {'left': (-1, 0), 'right': (1, 0), 'up': (0, -1), 'down': (0, 1)}


@pytest.mark.parametrize('split', ['train', 'val'])
def test_rawframe_labels_are_the_motion_and_the_scene_is_no_clue(
        tool, demo, split):
    """Found in the frames alone: what moves is where a frame is far from
    the clip's median (the backdrop, as the object covers any pixel in
    under half of the frames); its centre moves the label's way in every
    frame, the path's length in all, and not across. The four clips of a
    scene have one backdrop."""
    backdrops = {}
    for name, frames, label in rawframes_list(demo, split):
        clip = np.stack([np.asarray(Image.open(
            demo / 'sth' / 'rawframes' / name / tool.FRAME_TMPL.format(t)),
            float) for t in range(1, frames + 1)])
        backdrop = np.median(clip, axis=0)
        moving = np.abs(clip - backdrop).sum(-1) > 60
        assert moving.sum((1, 2)).min() > 20, name  # seen in every frame
        ys, xs = np.mgrid[:tool.FRAME_SIZE, :tool.FRAME_SIZE]
        centres = np.array([((xs * m).sum() / m.sum(), (ys * m).sum() /
                             m.sum()) for m in moving])
        way = np.array(WAYS[tool.MOTIONS[label]])
        steps = np.diff(centres, axis=0)
        along, across = steps @ way, steps @ way[::-1]
        assert (along > 0).all(), name
        assert abs(along.sum() - tool.PATH_LENGTH) < 3, name
        assert abs(across.sum()) < 3, name
        backdrops.setdefault(name.split('_')[0], []).append(backdrop)
    for scene, same in backdrops.items():
        assert len(same) == len(tool.MOTIONS)
        assert max(np.abs(b - same[0]).mean() for b in same) < 2, scene


@pytest.mark.filterwarnings('ignore:pkg_resources is deprecated')
def test_mmaction_reads_the_rawframes_with_the_demo_config(tool, demo_data,
                                                           demo):
    pytest.importorskip('mmaction', reason='mmaction2 is installed in .venv')
    import ws_mm  # noqa: F401  (before mmaction.models, which it completes)
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmaction.registry import DATASETS

    init_default_scope('mmaction')
    cfg = Config.fromfile(devkit.ROOT / devkit.DEMO_CONFIGS['mmaction'])
    cfg.merge_from_dict(devkit.demo_data_options('mmaction', demo))
    for split in ('train', 'val'):
        dataset = DATASETS.build(cfg[f'{split}_dataloader'].dataset)
        assert len(dataset) == len(tool.MOTIONS) * num(demo_data, split)
    name, _, label = rawframes_list(demo, 'val')[0]
    assert dataset.get_data_info(0)['frame_dir'] == str(
        demo / 'sth' / 'rawframes' / name)
    sample = dataset[0]  # the test pipeline: a frame per segment
    assert sample['data_samples'].gt_label.item() == label
    segments = cfg.model.backbone.num_segments
    assert sample['inputs'].shape == (segments, 3, tool.FRAME_SIZE,
                                      tool.FRAME_SIZE)


# ------------------------------------------------ determinism and the CLI --


def files(root):
    return {p.relative_to(root): p.read_bytes()
            for p in sorted(root.rglob('*')) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_data(tool, demo_data, demo,
                                                   tmp_path):
    tool.main(demo_data.args + ['--out', str(tmp_path / 'same')])
    assert files(tmp_path / 'same') == files(demo)
    tool.main(demo_data.args + ['--out', str(tmp_path / 'other'), '--seed',
                                str(demo_data.seed + 1), '--only', 'coco'])
    assert not (tmp_path / 'other' / 'VOCdevkit').exists()
    for split in ('train', 'val'):
        assert (coco_json(tmp_path / 'other', split).read_bytes() !=
                coco_json(demo, split).read_bytes())


def test_imagenet_crops_are_centred_on_objects_of_their_class(tool, demo):
    """Every class has crops in both splits, 64 px square, and a crop's
    centre has its class's colour: the chromaticity of the central 16x16
    pixels is nearest to the class's base colour (for at least 90% of the
    crops: an occluder or the shading can take the centre)."""
    colours = np.array(tool.SHAPE_COLOURS, float)
    chroma = colours / colours.sum(1, keepdims=True)
    for split in ('train', 'val'):
        right = total = 0
        for shape in tool.SHAPES:
            files = sorted((demo / 'imagenet' / split / shape).glob('*.jpg'))
            assert files, (split, shape)
            for path in files:
                image = np.asarray(Image.open(path), float)[..., ::-1]
                assert image.shape == (tool.CROP_SIZE, tool.CROP_SIZE, 3)
                centre = image[24:40, 24:40].reshape(-1, 3).mean(0)
                nearest = ((chroma - centre / centre.sum())**2).sum(1)
                right += tool.SHAPES[nearest.argmin()] == shape
                total += 1
        assert right >= 0.9 * total, (split, right, total)


@pytest.mark.e2e
def test_cli_skips_when_up_to_date_and_rewrites_when_args_change(
        tool, tmp_path, run_tool):
    out = tmp_path / 'demo'
    small = ['--num-train', '2', '--num-val', '1', '--size', '96']

    def run(*extra):
        proc = run_tool([sys.executable, 'tools/make_demo_data.py', '--out',
                         str(out), *small, *extra], timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert run().startswith('wrote 2 train + 1 val images')
    # A file of ours in the folder tells a skip from a rewrite (which
    # starts from an empty folder); file times could not, as two writes
    # can fall in the same tick of the file system's clock.
    stamp, mark = out / 'coco' / tool.STAMP, out / 'coco' / 'mark'
    stamped = stamp.read_text()
    mark.touch()
    assert 'up to date' in run()
    assert mark.exists() and stamp.read_text() == stamped
    # Fewer images: the stale ones go, the splits list only the new ones.
    run('--num-train', '1')
    assert not mark.exists() and stamp.read_text() != stamped
    assert len(list((out / 'coco' / 'train2017').iterdir())) == 1
    assert len(voc_names(out, 'trainval')) == 2


def test_refuses_to_replace_a_folder_it_did_not_write(tool, tmp_path):
    (tmp_path / 'coco').mkdir()
    (tmp_path / 'coco' / 'mine.txt').write_text('keep me')
    with pytest.raises(SystemExit, match='not written by this tool'):
        tool.main(['--out', str(tmp_path), '--num-train', '1',
                   '--num-val', '1', '--size', '96'])
    assert (tmp_path / 'coco' / 'mine.txt').read_text() == 'keep me'
