"""Joint transforms: image and mask stay aligned and uint8, crops avoid one-class windows, normalisation is ImageNet's."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from cityseg.data.layout import AUGMENTATIONS
from cityseg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PAD_COLOR,
    PAD_LABEL,
    build_transform,
    normalize,
)
from cityseg.errors import UserError
from cityseg.labels import IGNORE_INDEX, NUM_CLASSES, TRAIN_ID_COLORS

torch.set_num_threads(1)

# Every trainId gets its official colour; ignore is black; crop padding is the pad colour.
PALETTE = np.zeros((256, 3), dtype=np.uint8)
PALETTE[:NUM_CLASSES] = TRAIN_ID_COLORS
PALETTE[PAD_LABEL] = PAD_COLOR


def _block_pair(seed: int = 0, height: int = 64, width: int = 128, block: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A mask of random 8x8 class blocks (some ignore) and an image whose colour encodes each pixel's class."""
    rng = np.random.default_rng(seed)
    classes = np.append(np.arange(NUM_CLASSES), IGNORE_INDEX).astype(np.uint8)
    blocks = rng.choice(classes, size=(height // block, width // block))
    mask = np.kron(blocks, np.ones((block, block), dtype=np.uint8))  # (H, W)
    return PALETTE[mask], mask


def _hwc(image: torch.Tensor) -> np.ndarray:
    assert image.dtype == torch.uint8 and image.is_contiguous()  # what loaders collate and pass between processes
    return image.permute(1, 2, 0).numpy()  # (H, W, 3)


def _uniform_interior(mask: np.ndarray, radius: int = 2) -> np.ndarray:
    """True where the (2r+1)^2 neighbourhood has one class: there bilinear and nearest resampling must agree."""
    padded = np.pad(mask, radius, mode="edge")
    same = np.ones(mask.shape, dtype=bool)
    h, w = mask.shape
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            same &= padded[dy : dy + h, dx : dx + w] == mask
    return same


def test_geometric_augmentations_move_image_and_mask_together():
    image, mask = _block_pair()
    transform = build_transform(True, ("flip", "scale-crop"), crop=(96, 48), scale_range=(0.5, 2.0))
    checked = 0
    for seed in range(40):
        torch.manual_seed(seed)
        out_image, out_mask = transform(image, mask)
        assert out_image.shape == (3, 48, 96) and out_mask.shape == (48, 96)
        assert out_image.dtype == torch.uint8 and out_mask.dtype == torch.uint8
        colours = _hwc(out_image)
        labels = out_mask.numpy()
        inside = _uniform_interior(labels)
        # Colour at each interior pixel is the colour of the class the mask says (tolerance for rounding).
        diff = np.abs(colours[inside].astype(int) - PALETTE[labels[inside]].astype(int)).max()
        assert diff <= 3, f"seed {seed}: image and mask disagree by {diff} grey levels"
        checked += int(inside.sum())
    assert checked > 40 * 48 * 96 * 0.3  # the check covered a good share of pixels


def test_flip_happens_to_both_and_sometimes():
    image, mask = _block_pair(seed=3)
    transform = build_transform(True, ("flip",))
    flips = 0
    for seed in range(20):
        torch.manual_seed(seed)
        _, out_mask = transform(image, mask)
        flipped = np.array_equal(out_mask.numpy(), mask[:, ::-1])
        assert flipped or np.array_equal(out_mask.numpy(), mask)
        flips += flipped
    assert 0 < flips < 20


def test_small_scales_are_padded_last_at_the_bottom_right_with_the_pad_marks():
    image, mask = _block_pair()
    mask[:] = 1  # no ignore in the input
    transform = build_transform(True, ("scale-crop", "flip", "photometric"), crop=(128, 64), scale_range=(0.5, 0.5))
    for seed in range(6):  # flipped or not, distorted or not: the padding is added after, bottom and right
        torch.manual_seed(seed)
        out_image, out_mask = transform(image, mask)
        assert out_mask.shape == (64, 128)
        pad = out_mask == PAD_LABEL
        assert pad.sum() == 64 * 128 - 32 * 64  # the scaled 64x32 image fills one quarter
        assert not pad[:32, :64].any() and pad[32:].all() and pad[:, 64:].all()
        assert np.all(_hwc(out_image)[pad.numpy()] == PAD_COLOR)  # the mean colour as near as uint8 gets


def test_crop_retries_avoid_one_class_windows():
    image, mask = _block_pair()
    mask[:] = 0
    mask[:, :32] = 1  # class 1 only in the left quarter: most 32x32 windows are pure class 0

    def balanced_share(max_ratio: float) -> float:
        transform = build_transform(True, (), crop=(32, 32), crop_max_class_ratio=max_ratio)
        good = 0
        for seed in range(60):
            torch.manual_seed(seed)
            _, out = transform(image, mask)
            good += int((out == 0).float().mean() <= 0.75)
        return good / 60

    assert balanced_share(0.75) > 0.8
    assert balanced_share(1.0) < 0.5  # check disabled: most windows are dominated


@pytest.mark.parametrize(
    "aug", [("photometric",), ("color-jitter",), ("gaussian-blur",), ("photometric", "color-jitter", "gaussian-blur")]
)
def test_photometric_and_colour_ops_work_on_uint8_and_leave_the_mask_alone(aug):
    image, mask = _block_pair(seed=5)
    transform = build_transform(True, aug)
    changed = 0
    for seed in range(10):
        torch.manual_seed(seed)
        out_image, out_mask = transform(image, mask)
        assert out_image.dtype == torch.uint8 and out_mask.dtype == torch.uint8
        assert np.array_equal(out_mask.numpy(), mask)
        changed += not np.array_equal(_hwc(out_image), image)
    assert changed > 0


def test_eval_transform_keeps_pixels_and_resizes_width_by_height():
    image, mask = _block_pair()
    image.flags.writeable = mask.flags.writeable = False  # like cache memmaps: outputs must not be views of them
    out_image, out_mask = build_transform(False)(image, mask)
    assert np.array_equal(_hwc(out_image), image) and out_mask.dtype == torch.uint8
    assert torch.equal(out_mask, torch.from_numpy(mask))
    before = mask.copy()
    out_image += 1
    out_mask += 1
    assert np.array_equal(mask, before) and not np.array_equal(_hwc(out_image), image)  # no shared memory
    small_image, small_mask = build_transform(False, aug=("flip",), size=(64, 32))(image, mask)
    assert small_image.shape == (3, 32, 64) and small_mask.shape == (32, 64)
    assert set(small_mask.unique().tolist()) <= set(np.unique(mask).tolist())  # nearest: no blended ids


def test_unknown_augmentation_lists_the_valid_ones():
    from cityseg.training.config import resolve_config

    with pytest.raises(UserError) as info:
        resolve_config("seed", aug=("flip", "mixup"))
    assert "mixup" in str(info.value) and all(name in str(info.value) for name in AUGMENTATIONS)


def test_transform_pickles_for_dataloader_workers():
    transform = build_transform(True, AUGMENTATIONS, crop=(64, 32))
    image, mask = _block_pair()
    out_image, out_mask = pickle.loads(pickle.dumps(transform))(image, mask)
    assert out_image.shape == (3, 32, 64) and out_mask.shape == (32, 64)


def test_normalize_is_imagenet_and_lays_out_as_asked():
    image, _ = _block_pair()
    chw = torch.from_numpy(image).permute(2, 0, 1)[None]  # (1, 3, H, W) channels-last view, as predict makes
    expected = (chw.double() / 255 - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        3, 1, 1
    )
    out = normalize(chw)
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert torch.allclose(out.double(), expected, atol=1e-5)
    last = normalize(chw.contiguous(), memory_format=torch.channels_last)
    assert last.is_contiguous(memory_format=torch.channels_last) and torch.equal(last, out)


def test_dominant_class_ratio_estimate_is_close_on_large_windows_and_exact_on_small_ones():
    from cityseg.data.transforms import _dominant_class_ratio

    def exact(mask: torch.Tensor) -> float:
        counts = torch.bincount(mask.reshape(-1).long(), minlength=256)[:IGNORE_INDEX]
        return int(counts.max()) / int(counts.sum())

    _, mask = _block_pair(seed=7, height=512, width=1024, block=24)  # blocks off the 4-pixel grid
    large = torch.from_numpy(mask)
    assert abs(_dominant_class_ratio(large) - exact(large)) < 0.01
    small = large[:64, :128]
    assert _dominant_class_ratio(small) == exact(small)


def test_pixel_ops_can_be_left_out_of_the_worker_transform():
    aug = ("flip", "scale-crop", "photometric")
    with_ops = build_transform(train=True, aug=aug, crop=(32, 16))
    without = build_transform(train=True, aug=aug, crop=(32, 16), pixel_ops=False)
    assert "PhotoMetricDistortion" in repr(with_ops) and "PhotoMetricDistortion" not in repr(without)
    assert "ScaleCrop" in repr(without) and "RandomHorizontalFlip" in repr(without)
