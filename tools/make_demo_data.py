"""Write a small, deterministic demo dataset in the real COCO and VOC formats,
with object crops and short video clips made from its scenes.

No public dataset can be downloaded on the machines ws_mm is developed on, so
this tool draws one: textured shapes (the objects) pasted over random crops
of the real photographs that ship with matplotlib
(``mpl-data/sample_data/*.jpg``; today that is ``grace_hopper.jpg``).
The same scenes are written in the layouts the toolboxes' own dataset
classes and metrics read unchanged (mmdet, mmseg), their objects cropped
into an ImageNet-layout classification set (mmpretrain), and each turned
into clips of Something-Something-style rawframes (mmaction)::

    <out>/coco/train2017/000000000001.jpg ...
    <out>/coco/val2017/000000100001.jpg ...
    <out>/coco/annotations/instances_{train,val}2017.json
    <out>/VOCdevkit/VOC2012/JPEGImages/000000000001.jpg ...
    <out>/VOCdevkit/VOC2012/SegmentationClass/000000000001.png ...
    <out>/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
    <out>/imagenet/{train,val}/<shape>/000000000001_0.jpg ...
    <out>/sth/rawframes/000000000001_left/00001.jpg ...
    <out>/sth/{train,val}.txt

Classes. Shape ``k`` (1-based) is COCO category id ``k`` and VOC class index
``k``. COCO uses the shape names; VOC must use the fixed VOC names, because
mmseg's ``PascalVOCDataset`` has 21 fixed classes:

    ====  ========  =========
    id    COCO      VOC
    ====  ========  =========
    0     -         background
    1     disc      aeroplane
    2     square    bicycle
    3     triangle  bird
    4     star      boat
    5     cross     bottle
    ====  ========  =========

Images are landscape or portrait, the longer side ``--size`` px, the other
75-100 % of it. Each holds 2-6 objects of varied sizes that overlap; later
ones occlude earlier ones. COCO instances are the VISIBLE parts as polygons
(``cv2.findContours``; an object cut in two by an occluder gets two polygons)
that pycocotools rasterizes back to exactly the visible pixels; ``bbox`` is
the box of those pixels, ``area`` their pixel count (as COCO's). Instances
with less than 10 % of the shape visible, and crumbs under 4 px², are
dropped. Scenes never let an occluder punch a hole into an
object, because COCO polygons cannot express holes. VOC maps are palette PNGs
with the standard VOC colour map, class index per pixel and 255 ('void') on a
2-px band along every boundary between different labels, as in VOC.

Configs point at it like this (mmdet / mmseg)::

    dataset=dict(type='CocoDataset', data_root='data/demo/coco/',
                 metainfo=dict(classes=('disc', 'square', 'triangle', 'star',
                                        'cross')),
                 ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/'), ...)
    dataset=dict(type='PascalVOCDataset',
                 data_root='data/demo/VOCdevkit/VOC2012',
                 data_prefix=dict(img_path='JPEGImages',
                                  seg_map_path='SegmentationClass'),
                 ann_file='ImageSets/Segmentation/train.txt', ...)

The classification folders are named after the shapes; mmpretrain's
``CustomDataset`` numbers them in sorted order (cross, disc, square, star,
triangle).

Clips. In four clips per scene, its topmost object, cut out and scaled to
18 px, moves 44 px left, right, up or down (label 0-3, ``MOTIONS``) at
constant speed, in 12-20 frames, over the scene (its central square at
64x64 px, blurred and faded). The scene is no clue to the label, nor is any
frame alone; the frames without their order show the axis but not the
sense: telling left from right needs their order. The frames are sthv1's
JPEGs ``{:05}.jpg`` from 1, listed as mmaction's ``RawframeDataset`` reads
them, ``<folder> <frames> <label>`` a line::

    dataset=dict(type='RawframeDataset', data_root='data/demo/sth',
                 ann_file='train.txt', data_prefix=dict(img='rawframes'),
                 filename_tmpl='{:05}.jpg', ...)

mmdet: list the classes in this order. ``CocoDataset`` numbers labels in the
JSON's category order whatever the order of ``metainfo['classes']``, so
another order silently mislabels. mmseg: either keep the 21 VOC classes, or
pass ``metainfo=dict(classes=VOC_CLASSES)`` for a 6-class head.

Usage::

    python tools/make_demo_data.py [--out data/demo] [--seed 0]
        [--num-train 240] [--num-val 60] [--size 256]
        [--only {coco,voc,imagenet,sth}] [--force]

Output is a function of the arguments and of this file only: the same seed
gives byte-identical files. Each format folder gets a stamp
(``demo_data_stamp.json``) with the arguments and a hash of this file; a rerun
whose stamp matches skips that format, otherwise the folder is deleted and
written afresh (``--force`` always rewrites). A folder without a stamp is
never deleted.
"""
import argparse
import functools
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import cv2
import matplotlib
import numpy as np
from pycocotools import mask as mask_utils
from PIL import Image

SHAPES = ('disc', 'square', 'triangle', 'star', 'cross')
COCO_CLASSES = SHAPES
VOC_CLASSES = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle')
# Base colours (BGR), one per shape, far apart so that colour alone is a cue.
SHAPE_COLOURS = ((40, 60, 220), (220, 120, 30), (40, 200, 60),
                 (30, 210, 230), (200, 50, 200))
SPLITS = ('train', 'val')
# Val ids start here so that image ids and file names are unique across
# splits and do not depend on --num-train.
VAL_ID_OFFSET = 100000
MIN_VISIBLE = 0.1  # COCO drops instances with less of the shape visible
MIN_POLY_AREA = 4.0  # px²; smaller pieces are crumbs, not objects
VOID = 255
STAMP = 'demo_data_stamp.json'
CROP_MIN_VISIBLE = 0.5  # classification crops: objects at least half seen
CROP_MARGIN = 1.2  # crop side / longer side of the visible box
CROP_SIZE = 64  # px
# Clips: the label is the index of the motion; its direction (dx, dy), y down.
MOTIONS = ('left', 'right', 'up', 'down')
MOTION_DIRECTIONS = ((-1, 0), (1, 0), (0, -1), (0, 1))
FRAME_SIZE = 64  # px, square
MOVER_SIZE = 18  # px, longer side of the moving object
# px travelled; the object covers a pixel in under half of the frames, so
# that a pixel's median over the frames is the backdrop's
PATH_LENGTH = 44
# The backdrop, the scene blurred (Gaussian sigma, px) and faded (contrast
# kept): on the sharp scene the demo TSM finds the moving object too slowly
# to learn from scratch in minutes on a CPU.
BACKDROP_BLUR = 2.0
BACKDROP_CONTRAST = 0.5
CLIP_FRAMES = (12, 20)  # fewest and most frames of a clip
FRAME_TMPL = '{:05}.jpg'  # sthv1's names, from 1: filename_tmpl in configs


def voc_palette():
    """The standard VOC colour map: 256 RGB triples, 255 is (224, 224, 192)."""
    palette = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c = i
        for bit in range(7, -1, -1):
            palette[i] |= np.array([c & 1, (c >> 1) & 1, (c >> 2) & 1],
                                   np.uint8) << bit
            c >>= 3
    return palette


def load_photos():
    """The real photographs shipped with matplotlib, as BGR arrays."""
    folder = Path(matplotlib.get_data_path()) / 'sample_data'
    photos = [cv2.imread(str(p)) for p in sorted(folder.glob('*.jpg'))]
    if not photos:
        sys.exit(f'no background photographs (*.jpg) found in {folder}')
    return photos


def image_id(split, index):
    return index + 1 + (VAL_ID_OFFSET if split == 'val' else 0)


def background(rng, photos, height, width):
    """A random crop of a photo, flipped, rescaled and colour-jittered."""
    photo = photos[rng.integers(len(photos))]
    ph, pw = photo.shape[:2]
    # Crop with the target aspect ratio, covering 20-100 % of the photo.
    scale = np.sqrt(rng.uniform(0.2, 1.0))
    ch = int(min(ph, pw * height / width) * scale)
    cw = int(ch * width / height)
    y, x = rng.integers(ph - ch + 1), rng.integers(pw - cw + 1)
    crop = photo[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)
    gain = rng.uniform(0.7, 1.2, size=3)
    return np.clip(crop * gain, 0, 255)


def shape_mask(shape, centre, radius, angle, height, width):
    """Boolean mask of one shape (polygons drawn without anti-aliasing)."""
    mask = np.zeros((height, width), np.uint8)
    cx, cy = centre
    if shape == 'disc':
        cv2.circle(mask, (round(cx), round(cy)), round(radius), 1, -1)
        return mask.astype(bool)
    if shape == 'square':
        t = np.arange(4) * np.pi / 2 + np.pi / 4
        r = np.full(4, radius)
    elif shape == 'triangle':
        t = np.arange(3) * 2 * np.pi / 3
        r = np.full(3, radius)
    elif shape == 'star':
        t = np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2, 0.45 * radius, radius)
    else:  # cross: a plus sign whose arms are 2/3 of the radius wide
        a = radius / 3
        pts = np.array([(a, radius), (a, a), (radius, a), (radius, -a),
                        (a, -a), (a, -radius), (-a, -radius), (-a, -a),
                        (-radius, -a), (-radius, a), (-a, a), (-a, radius)])
        t = np.arctan2(pts[:, 1], pts[:, 0])
        r = np.hypot(pts[:, 0], pts[:, 1])
    t = t + angle
    poly = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)
    cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
    return mask.astype(bool)


def texture(shape, rng, centre, radius, angle, height, width):
    """Per-pixel BGR appearance of a shape: a class colour and pattern."""
    colour = np.clip(np.array(SHAPE_COLOURS[SHAPES.index(shape)]) +
                     rng.normal(0, 20, size=3), 0, 255)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    u = (xx - centre[0]) * np.cos(angle) + (yy - centre[1]) * np.sin(angle)
    v = -(xx - centre[0]) * np.sin(angle) + (yy - centre[1]) * np.cos(angle)
    period = radius * rng.uniform(0.3, 0.6)
    if shape == 'disc':  # shaded like a ball
        shade = 1.1 - 0.6 * (u**2 + v**2) / radius**2
    elif shape == 'square':  # checkerboard
        shade = 0.6 + 0.5 * ((np.floor(u / period) + np.floor(v / period)) %
                             2)
    elif shape == 'triangle':  # stripes
        shade = 0.75 + 0.35 * np.sign(np.sin(2 * np.pi * u / period))
    elif shape == 'star':  # grainy
        shade = rng.normal(1.0, 0.15, size=(height, width))
    else:  # cross: linear gradient
        shade = 0.6 + 0.5 * (u / radius + 1) / 2
    return shade[..., None] * colour


def has_hole(mask):
    _, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP,
                                    cv2.CHAIN_APPROX_SIMPLE)
    return hierarchy is not None and (hierarchy[0, :, 3] >= 0).any()


def visible_masks(masks):
    """Visible part of each mask when later masks are painted on top."""
    visible, above = [], np.zeros_like(masks[0]) if masks else None
    for mask in reversed(masks):
        visible.append(mask & ~above)
        above = above | mask
    return visible[::-1]


def make_scene(seed, split, index, size, photos):
    """Draw one scene: (BGR uint8 image, shape labels 1..5, masks).

    ``masks`` are the whole shapes in paint order (later ones on top); use
    ``visible_masks`` for what is seen. Each image has its own random stream,
    so a scene depends only on (seed, split, index, size).
    """
    rng = np.random.default_rng([seed, SPLITS.index(split), index, size])
    short = int(round(size * rng.uniform(0.75, 1.0)))
    height, width = (size, short) if rng.random() < 0.5 else (short, size)
    image = background(rng, photos, height, width)
    labels, masks = [], []
    for _ in range(rng.integers(2, 7)):
        # Retry placements that would punch a hole into an earlier object.
        for _ in range(10):
            shape = SHAPES[rng.integers(len(SHAPES))]
            radius = rng.uniform(0.08, 0.3) * min(height, width)
            centre = (rng.uniform(0.1 * width, 0.9 * width),
                      rng.uniform(0.1 * height, 0.9 * height))
            angle = rng.uniform(0, 2 * np.pi)
            mask = shape_mask(shape, centre, radius, angle, height, width)
            if not any(has_hole(v) for v in visible_masks(masks + [mask])):
                break
        else:  # no hole-free placement found: leave this object out
            continue
        image[mask] = texture(shape, rng, centre, radius, angle, height,
                              width)[mask]
        labels.append(SHAPES.index(shape) + 1)
        masks.append(mask)
    # Mild sensor noise so that object interiors are not perfectly flat.
    image = image + rng.normal(0, 4, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), labels, masks


def encode_jpg(image):
    return cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]


def polygons(mask):
    """Polygons whose pycocotools rasterization is exactly ``mask``.

    COCO rasterizes a pixel when its centre is inside the polygon, so a
    contour through boundary pixel centres (plain ``findContours``) loses
    half a pixel all round. Tracing the 2x upsampled mask and mapping back
    puts the vertices a quarter pixel inside the pixel edges instead.
    """
    big = cv2.resize(mask.astype(np.uint8), None, fx=2, fy=2,
                     interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    # Simplifying by a quarter pixel keeps the rasterization exact.
    return [(cv2.approxPolyDP(c, 0.5, True)[:, 0] + 0.5) / 2
            for c in contours]


def coco_annotation(visible, mask):
    """Polygons, bbox and area of one visible mask, or None if too occluded."""
    if visible.sum() < MIN_VISIBLE * mask.sum():
        return None
    polys = [p for p in polygons(visible)
             if len(p) >= 3 and cv2.contourArea(p.astype(np.float32)) >=
             MIN_POLY_AREA]
    if not polys:
        return None
    points = np.concatenate(polys)
    # The box of the pixels the polygons cover.
    x0, y0 = np.floor(points.min(0))
    x1, y1 = np.ceil(points.max(0))
    segmentation = [p.ravel().tolist() for p in polys]
    # COCO's area is the pixel count of the rasterized mask (what its
    # small / medium / large ranges are measured on), not the polygon area.
    rle = mask_utils.merge(mask_utils.frPyObjects(segmentation,
                                                  *visible.shape))
    return dict(
        segmentation=segmentation,
        area=float(mask_utils.area(rle)),
        bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
        iscrowd=0)


class CocoWriter:
    """The COCO layout: JPEGs per split, one instances JSON per split."""

    def __init__(self, root):
        self.root = root
        for split in SPLITS:
            (root / f'{split}2017').mkdir()
        (root / 'annotations').mkdir()
        self.images = {split: [] for split in SPLITS}
        self.annotations = {split: [] for split in SPLITS}

    def add(self, split, img_id, jpg, shape, labels, masks):
        file_name = f'{img_id:012d}.jpg'
        (self.root / f'{split}2017' / file_name).write_bytes(jpg)
        height, width = shape
        self.images[split].append(dict(id=img_id, file_name=file_name,
                                       height=height, width=width))
        annotations = self.annotations[split]
        for label, mask, visible in zip(labels, masks, visible_masks(masks)):
            ann = coco_annotation(visible, mask)
            if ann is not None:
                annotations.append(dict(id=len(annotations) + 1,
                                        image_id=img_id, category_id=label,
                                        **ann))

    def close(self):
        for split in SPLITS:
            dataset = dict(
                info=dict(description='ws_mm demo data '
                          '(tools/make_demo_data.py)', version='1.0'),
                licenses=[],
                images=self.images[split],
                annotations=self.annotations[split],
                categories=[dict(id=i + 1, name=name, supercategory='shape')
                            for i, name in enumerate(COCO_CLASSES)])
            (self.root / 'annotations' /
             f'instances_{split}2017.json').write_text(json.dumps(dataset))
        num = sum(len(anns) for anns in self.annotations.values())
        return f'coco ({num} instances)'


def voc_label_map(labels, masks, shape):
    """Class index per pixel, 255 on a 2-px band along label boundaries."""
    label_map = np.zeros(shape, np.uint8)
    for label, mask in zip(labels, masks):
        label_map[mask] = label
    kernel = np.ones((3, 3), np.uint8)
    border = cv2.dilate(label_map, kernel) != cv2.erode(label_map, kernel)
    label_map[border] = VOID
    return label_map


class VocWriter:
    """The VOC 2012 segmentation layout, both splits in one folder."""

    def __init__(self, root):
        self.voc = root / 'VOC2012'
        for sub in ('JPEGImages', 'SegmentationClass',
                    'ImageSets/Segmentation'):
            (self.voc / sub).mkdir(parents=True)
        self.palette = voc_palette().ravel().tolist()
        self.names = {split: [] for split in SPLITS}

    def add(self, split, img_id, jpg, shape, labels, masks):
        name = f'{img_id:012d}'
        self.names[split].append(name)
        (self.voc / 'JPEGImages' / f'{name}.jpg').write_bytes(jpg)
        label_map = voc_label_map(labels, masks, shape)
        png = Image.frombytes('P', label_map.shape[::-1], label_map.tobytes())
        png.putpalette(self.palette)
        png.save(self.voc / 'SegmentationClass' / f'{name}.png')

    def close(self):
        names = dict(self.names, trainval=self.names['train'] +
                     self.names['val'])
        for split, split_names in names.items():
            (self.voc / 'ImageSets/Segmentation' / f'{split}.txt').write_text(
                ''.join(f'{name}\n' for name in split_names))
        return f'voc ({len(names["trainval"])} label maps)'


class ImageNetWriter:
    """The ImageNet folder layout (a folder of images per class and split)
    for classification: each object at least half visible, cropped square
    around its visible pixels with a margin and resized."""

    def __init__(self, root):
        self.root = root
        for split in SPLITS:
            for shape in SHAPES:
                (root / split / shape).mkdir(parents=True)
        self.count = 0

    def add(self, split, img_id, jpg, shape, labels, masks):
        image = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
        for k, (label, mask, seen) in enumerate(
                zip(labels, masks, visible_masks(masks))):
            if seen.sum() < CROP_MIN_VISIBLE * mask.sum():
                continue
            ys, xs = np.nonzero(seen)
            half = CROP_MARGIN * max(np.ptp(ys), np.ptp(xs)) / 2 + 1
            cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
            top, left = int(max(cy - half, 0)), int(max(cx - half, 0))
            crop = image[top:int(cy + half) + 1, left:int(cx + half) + 1]
            crop = cv2.resize(crop, (CROP_SIZE, CROP_SIZE),
                              interpolation=cv2.INTER_AREA)
            (self.root / split / SHAPES[label - 1] /
             f'{img_id:012d}_{k}.jpg').write_bytes(encode_jpg(crop))
            self.count += 1

    def close(self):
        return f'imagenet ({self.count} crops)'


def make_clip(seed, split, index, label, image, masks):
    """The frames of a clip of a scene, BGR uint8 (T, FRAME_SIZE,
    FRAME_SIZE, 3), in which the scene's topmost object moves as
    ``MOTIONS[label]``.

    The object (the last of ``masks``, cut from ``image``) moves
    ``PATH_LENGTH`` px in a straight line, at constant speed, over the
    scene's central square, blurred and faded. The number of frames and the
    path's midpoint are drawn, the midpoint whatever the direction: left
    and right paths are each other's reverse.
    """
    rng = np.random.default_rng([seed, SPLITS.index(split), index, label])
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    backdrop = cv2.GaussianBlur(
        cv2.resize(image[top:top + side, left:left + side],
                   (FRAME_SIZE, FRAME_SIZE),
                   interpolation=cv2.INTER_AREA).astype(float),
        (0, 0), BACKDROP_BLUR)
    backdrop = 128 + BACKDROP_CONTRAST * (backdrop - 128)
    ys, xs = np.nonzero(masks[-1])
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    h, w = np.ptp(ys) + 1, np.ptp(xs) + 1
    scale = MOVER_SIZE / max(h, w)
    size = (max(round(w * scale), 1), max(round(h * scale), 1))  # (w, h)
    mover = cv2.resize(image[box], size, interpolation=cv2.INTER_AREA)
    mask = cv2.resize(masks[-1][box].astype(np.float32), size,
                      interpolation=cv2.INTER_AREA) > 0.5

    num = rng.integers(CLIP_FRAMES[0], CLIP_FRAMES[1] + 1)
    half = MOVER_SIZE / 2
    along = rng.uniform(PATH_LENGTH / 2 + half,
                        FRAME_SIZE - PATH_LENGTH / 2 - half)
    across = rng.uniform(half, FRAME_SIZE - half)
    direction = np.array(MOTION_DIRECTIONS[label])
    middle = np.array([along, across] if direction[0] else [across, along])
    frames = []
    for t in np.linspace(-0.5, 0.5, num):
        x, y = np.round(middle + t * PATH_LENGTH * direction -
                        np.array(size) / 2).astype(int)
        frame = backdrop.copy()
        frame[y:y + size[1], x:x + size[0]][mask] = mover[mask]
        # Sensor noise: no two frames alike, even where nothing moves.
        frames.append(np.clip(frame + rng.normal(0, 3, size=frame.shape),
                              0, 255).astype(np.uint8))
    return np.stack(frames)


class RawframesWriter:
    """Something-Something-style rawframes (mmaction's ``RawframeDataset``):
    a clip per scene and motion (:func:`make_clip`), so that a scene says
    nothing of the label, each in a folder ``<image name>_<motion>``, and
    per split a list of ``<folder> <frames> <label>`` lines."""

    def __init__(self, root, seed):
        self.root, self.seed = root, seed
        (root / 'rawframes').mkdir()
        self.lines = {split: [] for split in SPLITS}
        self.frames = 0

    def add(self, split, img_id, jpg, shape, labels, masks):
        image = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
        index = img_id - 1 - (VAL_ID_OFFSET if split == 'val' else 0)
        for label, motion in enumerate(MOTIONS):
            frames = make_clip(self.seed, split, index, label, image, masks)
            name = f'{img_id:012d}_{motion}'
            folder = self.root / 'rawframes' / name
            folder.mkdir()
            for t, frame in enumerate(frames, 1):
                (folder / FRAME_TMPL.format(t)).write_bytes(encode_jpg(frame))
            self.lines[split].append(f'{name} {len(frames)} {label}\n')
            self.frames += len(frames)

    def close(self):
        for split in SPLITS:
            (self.root / f'{split}.txt').write_text(''.join(self.lines[split]))
        clips = sum(len(lines) for lines in self.lines.values())
        return f'sth ({clips} clips, {self.frames} frames)'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Write the ws_mm demo dataset in the COCO and VOC '
        'layouts, object crops and clips (see the module docstring).',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--out', default='data/demo', type=Path,
                        help='folder that gets coco/, VOCdevkit/, imagenet/, '
                        'sth/')
    parser.add_argument('--seed', default=0, type=int,
                        help='same seed, same bytes')
    parser.add_argument('--num-train', default=240, type=int,
                        help='training images')
    parser.add_argument('--num-val', default=60, type=int,
                        help='validation images')
    parser.add_argument('--size', default=256, type=int,
                        help='longer image side in pixels')
    parser.add_argument('--only',
                        choices=('coco', 'voc', 'imagenet', 'sth'),
                        help='write one format only')
    parser.add_argument('--force', action='store_true',
                        help='rewrite even if the stamp says up to date')
    args = parser.parse_args(argv)
    if not 0 <= args.num_train < VAL_ID_OFFSET or args.num_val < 0:
        parser.error(f'--num-train must be in [0, {VAL_ID_OFFSET}), '
                     '--num-val >= 0')
    if args.size < 64:
        parser.error('--size must be at least 64')
    return args


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    stamp = json.dumps(dict(
        seed=args.seed, num_train=args.num_train, num_val=args.num_val,
        size=args.size,
        code=hashlib.sha256(Path(__file__).read_bytes()).hexdigest()))
    writers = dict(coco=(args.out / 'coco', CocoWriter),
                   voc=(args.out / 'VOCdevkit', VocWriter),
                   imagenet=(args.out / 'imagenet', ImageNetWriter),
                   sth=(args.out / 'sth',
                        functools.partial(RawframesWriter, seed=args.seed)))
    todo = []
    for fmt, (root, writer) in writers.items():
        if args.only not in (None, fmt):
            continue
        if (root / STAMP).is_file():
            if (root / STAMP).read_text() == stamp and not args.force:
                continue
        elif root.exists():
            sys.exit(f'{root} exists but was not written by this tool '
                     f'(no {STAMP}); remove it or choose another --out')
        todo.append((root, writer))
    if not todo:
        print(f'demo data in {args.out} is up to date (seed {args.seed}); '
              'nothing written')
        return
    opened = []
    for root, writer in todo:
        if root.exists():
            shutil.rmtree(root)  # ours (stamped): rewrite from scratch
        # The stamp marks the folder as ours at once, and says complete only
        # at the end: an interrupted run is redone.
        root.mkdir(parents=True)
        (root / STAMP).write_text('incomplete')
        opened.append((root, writer(root)))
    photos = load_photos()
    # Scenes are streamed: memory stays flat whatever the dataset size.
    for split, num in zip(SPLITS, (args.num_train, args.num_val)):
        for index in range(num):
            image, labels, masks = make_scene(args.seed, split, index,
                                              args.size, photos)
            jpg = encode_jpg(image).tobytes()
            for _, writer in opened:
                writer.add(split, image_id(split, index), jpg,
                           image.shape[:2], labels, masks)
    written = []
    for root, writer in opened:
        written.append(f'{writer.close()} -> {root}')
        (root / STAMP).write_text(stamp)
    print(f'wrote {args.num_train} train + {args.num_val} val images '
          f'(seed {args.seed}, size {args.size}): {", ".join(written)} '
          f'in {time.perf_counter() - start:.1f}s')


if __name__ == '__main__':
    main()
