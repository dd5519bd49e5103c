"""The named augmentations a training config may ask for, without torch (the CLI lists them in --help); what each
does is `transforms` (in the loader workers) and `device_augment` (batched on the training device)."""

AUGMENTATIONS = ("flip", "color-jitter", "gaussian-blur", "scale-crop", "photometric")
# Per-pixel image-only augmentations, in the order they run (after cropping).
PIXEL_AUGMENTATIONS = ("color-jitter", "photometric", "gaussian-blur")
DEFAULT_SCALE_RANGE = (0.5, 2.0)
