"""The Cityscapes layout on disk, as names only (no numpy: the CLI lists the splits in --help):
ROOT/leftImg8bit/<split>/<city>/<id>_leftImg8bit.png and ROOT/gtFine/<split>/<city>/<id>_gtFine_*."""

SPLITS = ("train", "val", "test")
LABEL_SOURCES = ("trainIds", "ids")  # train from labelTrainIds PNGs (after `cityseg prepare`) or the shipped labelIds
IMAGE_DIR = "leftImg8bit"
FINE_DIR = "gtFine"
IMAGE_SUFFIX = "_leftImg8bit.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
INSTANCE_IDS_SUFFIX = "_gtFine_instanceIds.png"
POLYGONS_SUFFIX = "_gtFine_polygons.json"
