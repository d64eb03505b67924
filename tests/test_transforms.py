"""RandomLogRescale (ws_mm.toolbox.transforms): the ratio's distribution, and
the resized image and labels against PIL, as the authors' code resizes."""
import numpy as np
import pytest
from PIL import Image

from ws_mm.toolbox.transforms import RandomLogRescale


def test_the_ratio_is_log_uniform():
    rescale = RandomLogRescale(ratio_range=(0.5, 2.0))
    np.random.seed(0)
    ratios = np.array([rescale.random_ratio() for _ in range(20000)])
    assert 0.5 <= ratios.min() and ratios.max() <= 2.0
    # log2(ratio) is uniform on [-1, 1]: its quartiles are -0.5, 0, 0.5
    # (a ratio uniform on [0.5, 2] would put a third of them below 1, not
    # half).
    quartiles = np.quantile(np.log2(ratios), [0.25, 0.5, 0.75])
    np.testing.assert_allclose(quartiles, [-0.5, 0, 0.5], atol=0.02)


def test_image_and_labels_as_pil_resizes_them():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
    labels = rng.integers(0, 21, (375, 500), dtype=np.uint8)
    labels[:20] = 255
    rescale = RandomLogRescale(ratio_range=(0.5, 2.0), backend='pillow',
                               interpolation='lanczos')
    np.random.seed(3)
    results = rescale(dict(img=image.copy(), gt_seg_map=labels.copy()))

    np.random.seed(3)
    ratio = 2 ** np.random.uniform(-1, 1)
    size = (round(500 * ratio), round(375 * ratio))
    expected_image = Image.fromarray(image).resize(size, Image.LANCZOS)
    expected_labels = Image.fromarray(labels).resize(size, Image.NEAREST)
    assert results['img'].shape == (size[1], size[0], 3)
    np.testing.assert_array_equal(results['img'], np.asarray(expected_image))
    np.testing.assert_array_equal(results['gt_seg_map'],
                                  np.asarray(expected_labels))


@pytest.mark.parametrize('ratio_range', [(0, 2), (2.0, 0.5), (-1, 1)])
def test_bad_ratio_range(ratio_range):
    with pytest.raises(ValueError, match=r'RandomLogRescale: ratio_range'):
        RandomLogRescale(ratio_range=ratio_range)
