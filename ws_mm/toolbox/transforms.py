"""The random rescaling of the DeepLabV3 code behind the paper's Table 11.

That code (Batch-Channel-Normalization, DeepLabV3/utils.py ``preprocess``, as
DeepLabv3.pytorch) scales each training image by ``2 ** u``, ``u`` uniform in
``[log2 0.5, log2 2]``, relative to the image's own size. mmcv's
``RandomResize`` draws the ratio uniformly and relative to a fixed scale. The
Table 11 configs import this module (``custom_imports``); it needs mmcv.
"""
from typing import Tuple

import numpy as np
from mmcv.transforms import BaseTransform, Resize
from mmcv.transforms.utils import cache_randomness
from mmengine.registry import TRANSFORMS


@TRANSFORMS.register_module()
class RandomLogRescale(BaseTransform):
    """Rescale by a ratio drawn log-uniformly from ``ratio_range``.

    Each side becomes ``round(side * ratio)``; the image, the segmentation
    map (nearest) and boxes are resized by mmcv's ``Resize`` built from
    ``resize_kwargs`` (e.g. ``backend='pillow', interpolation='lanczos'``
    for PIL's antialiasing filter, as the authors' code).

    Args:
        ratio_range: ``(low, high)`` with ``0 < low <= high``.
        **resize_kwargs: arguments of mmcv's ``Resize`` other than the size.
    """

    def __init__(self, ratio_range: Tuple[float, float] = (0.5, 2.0),
                 **resize_kwargs):
        low, high = ratio_range
        if not 0 < low <= high:
            raise ValueError(f'RandomLogRescale: ratio_range must be (low, '
                             f'high) with 0 < low <= high, got {ratio_range}')
        self.ratio_range = (low, high)
        self.resize = Resize(scale=(1, 1), keep_ratio=False, **resize_kwargs)

    @cache_randomness
    def random_ratio(self) -> float:
        low, high = np.log2(self.ratio_range)
        return float(2 ** np.random.uniform(low, high))

    def transform(self, results: dict) -> dict:
        height, width = results['img'].shape[:2]
        ratio = self.random_ratio()
        self.resize.scale = (round(width * ratio), round(height * ratio))
        return self.resize(results)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(ratio_range={self.ratio_range}, '
                f'resize={self.resize!r})')
