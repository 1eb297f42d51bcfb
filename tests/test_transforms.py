"""Albumentations pipelines: the preset's documented geometry (crop, flip, cutout), Normalize, specs.

Oracles: numpy padding/flipping of a uniquely-marked image, and Normalize's formula.
To read pixels back before Normalize, pipelines use std = 1 and a mean whose pixel value (FILL) never
occurs in the test image: pixel = output * 255 + FILL.
"""

from __future__ import annotations

import copy

import albumentations as A
import numpy as np
import pytest
import torch

from woollylib.preloading import transforms as T

FILL = (10, 20, 30)  # the mean colour in pixels (0-255)
MEAN = tuple(v / 255.0 for v in FILL)
ONES = (1.0, 1.0, 1.0)


def marked_image(h: int = 32, w: int = 32) -> np.ndarray:
    """Every pixel unique: R = 100 + row, G = 100 + column, B = 200; never equal to FILL."""
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[..., 0] = 100 + np.arange(h)[:, None]
    img[..., 1] = 100 + np.arange(w)[None, :]
    img[..., 2] = 200
    return img


def to_pixels(out: torch.Tensor) -> np.ndarray:
    """Undo Normalize(mean=FILL/255, std=1) and ToTensorV2 -> uint8 HWC."""
    assert out.dtype == torch.float32 and out.dim() == 3 and out.shape[0] == 3
    pix = out.permute(1, 2, 0).numpy() * 255.0 + np.array(FILL)
    assert np.abs(pix - np.rint(pix)).max() < 1e-3
    return np.rint(pix).astype(np.uint8)


def is_fill(pix: np.ndarray) -> np.ndarray:
    return np.all(pix == np.array(FILL, dtype=np.uint8), axis=-1)


# ----------------------------------------------------------------------------------------------------
# The CIFAR preset


def test_preset_order_geometry_and_cutout_before_normalize():
    tf = T.train_transforms(MEAN, ONES)
    names = [type(t).__name__ for t in tf.transforms]
    assert names == ["PadIfNeeded", "RandomCrop", "HorizontalFlip", "CoarseDropout", "Normalize", "ToTensorV2"]
    pad, crop, flip, drop = tf.transforms[:4]
    assert (pad.min_height, pad.min_width, crop.height, crop.width) == (40, 40, 32, 32)
    assert flip.p == 0.5
    assert drop.num_holes_range == (1, 1)
    assert drop.hole_height_range == (16, 16) and drop.hole_width_range == (16, 16)
    assert tuple(drop.fill) == FILL  # the mean in pixel space (0-255), not 0 and not 0-1
    assert T.test_transforms(MEAN, ONES).transforms[0].__class__ is A.Normalize


def test_crop_is_a_32x32_window_of_the_40x40_padded_image():
    img = marked_image()
    padded = np.empty((40, 40, 3), dtype=np.uint8)
    padded[:] = FILL
    padded[4:36, 4:36] = img  # oracle: PadIfNeeded(40) centres the image, fills with the mean colour
    tf = T.train_transforms(MEAN, ONES, flip=False, cutout=0, seed=0)
    offsets = set()
    for _ in range(60):
        pix = to_pixels(tf(image=img)["image"])
        assert pix.shape == (32, 32, 3)
        inside = np.argwhere(~is_fill(pix))[0]  # any original pixel locates the window
        r, c = inside
        # original pixel (i, j) sits at (i + 4, j + 4) in the padded image and at (r, c) in the output
        dy, dx = int(pix[r, c, 0]) - 100 + 4 - r, int(pix[r, c, 1]) - 100 + 4 - c
        assert 0 <= dy <= 8 and 0 <= dx <= 8
        np.testing.assert_array_equal(pix, padded[dy : dy + 32, dx : dx + 32])
        offsets.add((dy, dx))
    assert len(offsets) > 10  # the crop really moves (+-4 px each way)


def test_flip_is_a_horizontal_mirror_half_of_the_time():
    img = marked_image()
    tf = T.train_transforms(MEAN, ONES, padding=0, cutout=0, seed=1)
    flipped = 0
    for _ in range(60):
        pix = to_pixels(tf(image=img)["image"])
        if np.array_equal(pix, img[:, ::-1]):
            flipped += 1
        else:
            np.testing.assert_array_equal(pix, img)
    assert 15 <= flipped <= 45
    always = T.build_transforms(["horizontal_flip"], MEAN, ONES, horizontal_flip={"p": 1.0})
    # the list entry uses p=0.5 and the keyword entry p=1.0: two flips, composed in order
    assert [type(t).__name__ for t in always.transforms][:2] == ["HorizontalFlip", "HorizontalFlip"]
    only = T.build_transforms(None, MEAN, ONES, hflip={"p": 1.0})
    np.testing.assert_array_equal(to_pixels(only(image=img)["image"]), img[:, ::-1])


def _hole(pix: np.ndarray, img: np.ndarray) -> tuple[int, int, int, int] | None:
    changed = np.any(pix != img, axis=-1)
    if not changed.any():
        return None
    assert np.array_equal(changed, is_fill(pix)), "every changed pixel must be the mean fill"
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    assert changed[r0:r1, c0:c1].all() and changed.sum() == (r1 - r0) * (c1 - c0), "one filled rectangle"
    return r0, r1, c0, c1


def test_cutout_is_exactly_one_16x16_hole_filled_with_the_mean():
    img = marked_image()
    tf = T.train_transforms(MEAN, ONES, padding=0, flip=False, cutout=16, cutout_p=1.0, seed=2)
    corners = set()
    for _ in range(60):
        r0, r1, c0, c1 = _hole(to_pixels(tf(image=img)["image"]), img)
        # 16 px on each side unless clipped by the image border
        assert (r1 - r0 == 16 or r0 == 0 or r1 == 32) and r1 - r0 <= 16
        assert (c1 - c0 == 16 or c0 == 0 or c1 == 32) and c1 - c0 <= 16
        corners.add((r0, c0))
    assert len(corners) > 20  # the hole moves


def test_cutout_probability_and_size_options():
    img = marked_image()
    tf = T.train_transforms(MEAN, ONES, padding=0, flip=False, cutout_p=0.5, seed=3)
    holes = [_hole(to_pixels(tf(image=img)["image"]), img) for _ in range(60)]
    assert 15 <= sum(h is not None for h in holes) <= 45
    small = T.build_transforms({"cutout": {"size": (4, 8), "p": 1.0}}, MEAN, ONES, seed=0)
    r0, r1, c0, c1 = _hole(to_pixels(small(image=img)["image"]), img)
    assert (r1 - r0, c1 - c0) == (4, 8)
    no_aug = T.train_transforms(MEAN, ONES, padding=0, flip=False, cutout=0)
    np.testing.assert_array_equal(to_pixels(no_aug(image=img)["image"]), img)


# ----------------------------------------------------------------------------------------------------
# Normalize and the transforms by name


def test_normalize_uses_the_given_mean_and_std():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    out = T.test_transforms(mean, std)(image=img)["image"]
    expected = (img.astype(np.float64) / 255.0 - np.array(mean)) / np.array(std)
    assert out.dtype == torch.float32 and out.shape == (3, 8, 12)
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize(
    "spec, cls",
    [
        ({"name": "affine", "p": 1.0}, A.Affine),
        ({"name": "ShiftScaleRotate", "rotate": (-5, 5), "p": 1.0}, A.Affine),
        ({"name": "rotate", "limit": 10, "p": 1.0}, A.Rotate),
        ({"name": "to_gray", "p": 1.0}, A.ToGray),
        ({"name": "brightness_contrast", "brightness_limit": 0.3, "p": 1.0}, A.RandomBrightnessContrast),
        ({"name": "cutout", "num_holes_range": (2, 3), "p": 1.0}, A.CoarseDropout),
        ({"name": "coarse_dropout", "hole_height_range": (2, 4), "hole_width_range": (2, 4)}, A.CoarseDropout),
        ("pad_crop", A.PadIfNeeded),
    ],
)
def test_named_transforms_build_and_run(spec, cls):
    # pytest.ini turns albumentations' invalid/ignored-argument warnings into errors
    tf = T.build_transforms([spec], MEAN, ONES, seed=0)
    assert isinstance(tf.transforms[0], cls)
    assert [type(t).__name__ for t in tf.transforms[-2:]] == ["Normalize", "ToTensorV2"]
    out = tf(image=marked_image())["image"]
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32


def test_to_gray_and_fill_mean_reach_albumentations():
    gray = T.build_transforms({"to_gray": {"p": 1.0}}, MEAN, ONES)
    pix = to_pixels(gray(image=marked_image())["image"])
    assert np.array_equal(pix[..., 0], pix[..., 1]) and np.array_equal(pix[..., 1], pix[..., 2])
    rot = T.build_transforms([("rotate", {"limit": (45, 45), "p": 1.0})], MEAN, ONES)
    assert tuple(rot.transforms[0].fill) == FILL
    pix = to_pixels(rot(image=marked_image())["image"])
    assert is_fill(pix)[0, 0] and is_fill(pix)[-1, -1]  # rotated corners are the mean colour


def test_same_seed_same_augmentation():
    img = marked_image()
    a = [T.train_transforms(MEAN, ONES, seed=7)(image=img)["image"] for _ in range(2)]
    assert torch.equal(a[0], a[1])


def test_list_transforms_and_catalogue():
    names = T.list_transforms()
    for name in ("affine", "rotate", "to_gray", "brightness_contrast", "coarse_dropout", "horizontal_flip", "pad_crop"):
        assert name in names


# ----------------------------------------------------------------------------------------------------
# No shared mutable defaults


def test_defaults_are_fresh_and_never_mutated():
    before = T.transform_defaults("cutout")
    d = T.transform_defaults("cutout")
    d["size"] = 2
    d["p"] = 0.0
    assert T.transform_defaults("coarse_dropout") == before  # editing a returned dict changes nothing
    spec = {"cutout": {"size": 8, "p": 1.0}, "affine": {"rotate": (-5, 5)}}
    spec_copy = copy.deepcopy(spec)
    small = T.build_transforms(spec, MEAN, ONES)
    assert spec == spec_copy  # the caller's dict is untouched
    assert small.transforms[0].hole_height_range == (8, 8)
    kwargs = {"p": 1.0, "size": 4}
    T.build_transforms(None, MEAN, ONES, cutout=kwargs)
    assert kwargs == {"p": 1.0, "size": 4}
    # a later default build is not affected by the earlier overrides
    default = T.train_transforms(MEAN, ONES)
    assert default.transforms[3].hole_height_range == (16, 16) and default.transforms[3].p == 0.5
    assert T.transform_defaults("cutout") == before and before["fill"] == "mean"


# ----------------------------------------------------------------------------------------------------
# Bad input


def test_unknown_transform_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown transform 'blur'.*coarse_dropout"):
        T.build_transforms(["blur"], MEAN, ONES)


def test_unknown_parameter_names_the_valid_ones():
    with pytest.raises(TypeError, match=r"no parameter\(s\) \['max_holes'\].*num_holes_range"):
        T.build_transforms({"cutout": {"max_holes": 1}}, MEAN, ONES)
    with pytest.raises(TypeError, match="shift_limit"):
        T.build_transforms([{"name": "affine", "shift_limit": 0.1}], MEAN, ONES)


def test_normalize_in_spec_and_bad_specs_are_rejected():
    with pytest.raises(ValueError, match="added at the end"):
        T.build_transforms(["hflip", "normalize"], MEAN, ONES)
    with pytest.raises(TypeError, match="list or a dict"):
        T.build_transforms("hflip", MEAN, ONES)
    with pytest.raises(ValueError, match="'name' key"):
        T.build_transforms([{"p": 1.0}], MEAN, ONES)
    with pytest.raises(ValueError, match="3 values"):
        T.test_transforms((0.5, 0.5), ONES)
    with pytest.raises(ValueError, match="std must be positive"):
        T.test_transforms(MEAN, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="0-1 scale"):
        T.test_transforms((125.0, 123.0, 114.0), ONES)
