"""The Cityscapes layout on disk and the named augmentations, as names only (no numpy: the CLI lists them in --help):
ROOT/leftImg8bit/<split>/<city>/<id>_leftImg8bit.png and ROOT/gtFine/<split>/<city>/<id>_gtFine_*. What each
augmentation does is `transforms` (in the loader workers) and `device_augment` (batched on the training device)."""

SPLITS = ("train", "val", "test")
LABEL_SOURCES = ("trainIds", "ids")  # train from labelTrainIds PNGs (after `cityseg prepare`) or the shipped labelIds
IMAGE_DIR = "leftImg8bit"
FINE_DIR = "gtFine"
IMAGE_SUFFIX = "_leftImg8bit.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
INSTANCE_IDS_SUFFIX = "_gtFine_instanceIds.png"
POLYGONS_SUFFIX = "_gtFine_polygons.json"

AUGMENTATIONS = ("flip", "color-jitter", "gaussian-blur", "scale-crop", "photometric")
# Per-pixel image-only augmentations, in the order they run (after cropping).
PIXEL_AUGMENTATIONS = ("color-jitter", "photometric", "gaussian-blur")
DEFAULT_SCALE_RANGE = (0.5, 2.0)
