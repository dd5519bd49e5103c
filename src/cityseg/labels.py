"""Cityscapes label tables derived from `cityscapesscripts.helpers.labels` (never hand-typed): ids are the 34
official label ids of `*_gtFine_labelIds.png`; trainIds are the 19 evaluation classes 0..18, 255 = ignore."""

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

IGNORE_INDEX = 255

_EVAL_LABELS = sorted((lab for lab in _CS_LABELS if 0 <= lab.trainId < IGNORE_INDEX), key=lambda lab: lab.trainId)
NUM_CLASSES = len(_EVAL_LABELS)  # 19
_EVAL_IDS = [lab.id for lab in _EVAL_LABELS]  # the labelId of each trainId 0..18

CLASS_NAMES: tuple[str, ...] = tuple(lab.name for lab in _EVAL_LABELS)
CATEGORY_NAMES: tuple[str, ...] = tuple(dict.fromkeys(lab.category for lab in _EVAL_LABELS))

# (19, 3) uint8 colours of the evaluation classes, indexed by trainId.
TRAIN_ID_COLORS = np.array([lab.color for lab in _EVAL_LABELS], dtype=np.uint8)

# trainId -> labelId for prediction PNGs; 255 (ignore) maps to 0 ("unlabeled").
TRAIN_ID_TO_ID = np.zeros(256, dtype=np.uint8)
TRAIN_ID_TO_ID[:NUM_CLASSES] = _EVAL_IDS

# labelId -> trainId for reading shipped labelIds PNGs; ids without a trainId map to 255.
ID_TO_TRAIN_ID = np.full(256, IGNORE_INDEX, dtype=np.uint8)
ID_TO_TRAIN_ID[_EVAL_IDS] = np.arange(NUM_CLASSES)

# Every labelId a valid labelIds PNG may hold (0..33; license plate's -1 is never written).
VALID_LABEL_IDS = frozenset(lab.id for lab in _CS_LABELS if lab.id >= 0)
EVAL_LABEL_IDS = frozenset(_EVAL_IDS)

# (256, 3) colour of every labelId, for colouring predictions stored as labelIds.
ID_COLORS = np.zeros((256, 3), dtype=np.uint8)
for _lab in _CS_LABELS:
    if _lab.id >= 0:
        ID_COLORS[_lab.id] = _lab.color


def train_ids_to_ids(train_ids: np.ndarray) -> np.ndarray:
    """Map a trainId array (uint8, 255 = ignore) to official labelIds for prediction PNGs."""
    return TRAIN_ID_TO_ID[train_ids]


def ids_to_train_ids(ids: np.ndarray) -> np.ndarray:
    """Map a labelIds array to trainIds (255 for every id outside the 19 evaluation classes)."""
    return ID_TO_TRAIN_ID[ids]


def colorize_train_ids(train_ids: np.ndarray) -> np.ndarray:
    """(H, W) trainIds -> (H, W, 3) uint8 Cityscapes colours; ignore pixels are black."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:NUM_CLASSES] = TRAIN_ID_COLORS
    return palette[train_ids]
