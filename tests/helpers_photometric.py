"""The reference the photometric tests compare with: mmsegmentation's PhotoMetricDistortion.transform
written out from its definition (mmseg/datasets/transforms/transforms.py), on BGR images as mmseg keeps
them, with its random choices replaced by a given `PhotometricDraw`. Slow and obviously correct."""

from __future__ import annotations

import cv2
import numpy as np

from cityseg.data.photometric import PhotometricDraw


def convert(img: np.ndarray, alpha: float = 1, beta: float = 0) -> np.ndarray:
    """mmseg's PhotoMetricDistortion.convert: multiply, add, clip, cast."""
    img = img.astype(np.float32) * alpha + beta
    img = np.clip(img, 0, 255)
    return img.astype(np.uint8)


def mmseg_photometric_bgr(img: np.ndarray, draw: PhotometricDraw) -> np.ndarray:
    """mmseg's transform() on a (H, W, 3) uint8 BGR image; mmcv.bgr2hsv/hsv2bgr are these cv2.cvtColor calls."""
    if draw.brightness is not None:
        img = convert(img, beta=draw.brightness)
    if draw.contrast_first and draw.contrast is not None:
        img = convert(img, alpha=draw.contrast)
    if draw.saturation is not None:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        img[:, :, 1] = convert(img[:, :, 1], alpha=draw.saturation)
        img = cv2.cvtColor(img, cv2.COLOR_HSV2BGR)
    if draw.hue is not None:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        img[:, :, 0] = (img[:, :, 0].astype(int) + draw.hue) % 180
        img = cv2.cvtColor(img, cv2.COLOR_HSV2BGR)
    if not draw.contrast_first and draw.contrast is not None:
        img = convert(img, alpha=draw.contrast)
    return img


def reference_rgb(image: np.ndarray, draw: PhotometricDraw) -> np.ndarray:
    """The reference for an RGB (H, W, 3) uint8 image: reversed into BGR, distorted, reversed back."""
    return np.ascontiguousarray(mmseg_photometric_bgr(np.ascontiguousarray(image[..., ::-1]), draw)[..., ::-1])


def every_kind_of_draw() -> list[PhotometricDraw]:
    """Each step alone, all together in both contrast orders, extremes of each range, and nothing."""
    return [
        PhotometricDraw(),
        PhotometricDraw(brightness=31.7),
        PhotometricDraw(brightness=-32.0),
        PhotometricDraw(contrast=1.4999, contrast_first=True),
        PhotometricDraw(contrast=0.5, contrast_first=False),
        PhotometricDraw(saturation=1.37),
        PhotometricDraw(saturation=0.5),
        PhotometricDraw(hue=-18),
        PhotometricDraw(hue=17),
        PhotometricDraw(brightness=-12.3, contrast=1.21, contrast_first=True, saturation=0.73, hue=9),
        PhotometricDraw(brightness=20.5, contrast=0.66, contrast_first=False, saturation=1.45, hue=-5),
        PhotometricDraw(brightness=5.5, saturation=1.2, contrast=1.3, contrast_first=False),
    ]


def colourful_image(height: int = 48, width: int = 96, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 RGB: random colours plus greys, pure hues and the extremes 0 and 255."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image[0, :] = np.linspace(0, 255, width).astype(np.uint8)[:, None]  # greys (S = 0)
    image[1, :, 0], image[1, :, 1:] = 255, 0  # pure red
    image[2, :, :2], image[2, :, 2] = 255, 0  # yellow
    image[3, ::2] = 0
    image[3, 1::2] = 255
    return image
