"""Data layer: pairs, ids and cities from the official layout; every ROOT mistake gets its own clear error."""

from __future__ import annotations

import pickle
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cityseg.data.dataset import CityscapesDataset, worker_init
from cityseg.data.frames import list_frames, read_image, read_train_ids, validate_root
from cityseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from cityseg.errors import UserError

ID_PATTERN = re.compile(r"^(?P<city>.+)_\d{6}_\d{6}$")


def _image_files(root, split):
    return sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))


def _first_city(root, split="train"):
    return sorted(p.name for p in (root / "leftImg8bit" / split).iterdir())[0]


# ---------------------------------------------------------------------------------------------- discovery


def test_frames_pair_images_with_prepared_labels(synth_root):
    frames = list_frames(synth_root, "train")
    files = _image_files(synth_root, "train")
    assert len(frames) == len(files) > 0
    assert [f.id for f in frames] == sorted(f.id for f in frames)
    assert {f.image for f in frames} == set(files)
    for frame in frames:
        match = ID_PATTERN.match(frame.id)
        assert match and match["city"] == frame.city == frame.image.parent.name
        assert frame.split == "train"
        assert frame.label.name == f"{frame.id}_gtFine_labelTrainIds.png" and frame.label.is_file()
        assert frame.label_ids.name == f"{frame.id}_gtFine_labelIds.png" and frame.label_ids.is_file()
        assert frame.instance_ids.name == f"{frame.id}_gtFine_instanceIds.png"
        assert frame.image.name == f"{frame.id}_leftImg8bit.png"
    assert len({f.city for f in frames}) == len({p.parent.name for p in files})


def test_label_source_ids_reads_shipped_label_ids(synth_raw_root):
    frames = list_frames(synth_raw_root, "val", label_source="ids")
    assert frames and all(f.label == f.label_ids for f in frames)


def test_test_split_is_images_only(synth_root):
    frames = list_frames(synth_root, "test", label_source=None)
    assert len(frames) == len(_image_files(synth_root, "test")) > 0
    assert all(f.label is None for f in frames)


def test_label_ids_lut_equals_prepared_train_ids_away_from_borders(synth_root):
    # Polygon rasterisation and the shipped labelIds may differ on object borders only.
    compared = total = 0
    for frame in list_frames(synth_root, "train")[:6]:
        from_lut = read_train_ids(frame.label_ids, label_source="ids")
        prepared = read_train_ids(frame.label)
        ids = np.asarray(Image.open(frame.label_ids))
        padded = np.pad(ids, 1, mode="edge")
        interior = np.ones(ids.shape, dtype=bool)
        for dy in range(3):
            for dx in range(3):
                interior &= padded[dy : dy + ids.shape[0], dx : dx + ids.shape[1]] == ids
        assert np.array_equal(from_lut[interior], prepared[interior]), frame.id
        compared += int(interior.sum())
        total += ids.size
    assert compared > 0.5 * total


# ---------------------------------------------------------------------------------------------- ROOT errors


def test_root_missing(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        validate_root(tmp_path / "cityscapes")


def test_root_empty(tmp_path):
    with pytest.raises(UserError, match="is empty"):
        validate_root(tmp_path)


@pytest.mark.parametrize("inner", ["leftImg8bit", "gtFine", "leftImg8bit/train"])
def test_root_too_deep_names_the_dataset_root(synth_root, inner):
    with pytest.raises(UserError, match="inside the dataset") as info:
        validate_root(synth_root / inner)
    assert str(synth_root.resolve()) in str(info.value)


def test_root_too_shallow_names_the_dataset_root(synth_root):
    with pytest.raises(UserError, match="folder above the dataset") as info:
        validate_root(synth_root.parent)
    assert str(synth_root) in str(info.value)


def test_not_a_dataset_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match="not a Cityscapes folder"):
        validate_root(tmp_path)


def test_split_folder_missing(mutable_root):
    shutil.rmtree(mutable_root / "leftImg8bit" / "val")
    with pytest.raises(UserError, match=r"split folder .*leftImg8bit/val is missing"):
        validate_root(mutable_root)


def test_label_split_folder_missing(mutable_root):
    shutil.rmtree(mutable_root / "gtFine" / "val")
    with pytest.raises(UserError, match=r"split folder .*gtFine/val is missing"):
        validate_root(mutable_root)


def test_split_without_images(mutable_root):
    for path in _image_files(mutable_root, "val"):
        path.unlink()
    with pytest.raises(UserError, match="split 'val' has no images"):
        validate_root(mutable_root)


def test_city_with_images_but_no_labels(mutable_root):
    city = _first_city(mutable_root)
    shutil.rmtree(mutable_root / "gtFine" / "train" / city)
    with pytest.raises(UserError, match=f"city '{city}' has 2 images .* but no"):
        validate_root(mutable_root)


def test_images_without_labels_are_counted_and_named(mutable_root):
    frames = list_frames(mutable_root, "train")
    for frame in frames[1:3]:  # keep each city labelled: frames 1 and 2 are in different cities
        frame.label.unlink()
        frame.label_ids.with_name(frame.id + "_gtFine_polygons.json").unlink()
    with pytest.raises(UserError, match="2 image") as info:
        validate_root(mutable_root)
    assert frames[1].id in str(info.value)


def test_unprepared_single_labels_point_to_prepare(mutable_root):
    frame = list_frames(mutable_root, "train")[1]
    frame.label.unlink()
    with pytest.raises(UserError, match="cityseg prepare"):
        validate_root(mutable_root)


def test_labels_without_images_are_counted_and_named(mutable_root):
    frame = list_frames(mutable_root, "train")[1]
    frame.image.unlink()
    with pytest.raises(UserError, match="1 label file") as info:
        validate_root(mutable_root)
    assert frame.id in str(info.value)


def test_file_names_off_the_pattern_are_named(mutable_root):
    city = _first_city(mutable_root)
    stray = mutable_root / "leftImg8bit" / "train" / city / "holiday_photo.png"
    stray.write_bytes(b"x")
    with pytest.raises(UserError, match="name pattern") as info:
        validate_root(mutable_root)
    assert "holiday_photo.png" in str(info.value)


def test_train_ids_not_prepared_says_run_prepare(synth_raw_root):
    with pytest.raises(UserError, match="not prepared") as info:
        validate_root(synth_raw_root)
    assert f"cityseg prepare {synth_raw_root}" in str(info.value)
    validate_root(synth_raw_root, label_source="ids")  # the shipped labelIds are enough for "ids"


# ---------------------------------------------------------------------------------------------- reading


def test_dataset_item_is_uint8_image_and_mask(synth_root):
    frames = list_frames(synth_root, "val")
    image, mask = CityscapesDataset(frames)[0]
    raw = read_image(frames[0].image)
    assert image.dtype == torch.uint8 and image.shape == (3, *raw.shape[:2]) and image.is_contiguous()
    assert mask.dtype == torch.uint8 and mask.shape == raw.shape[:2]
    assert np.array_equal(image.permute(1, 2, 0).numpy(), raw)  # the decoded pixels, untouched
    # Normalised on the device later: the model input is ImageNet's (x / 255 - mean) / std.
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    restored = (normalize(image) * std + mean).mul(255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(restored, raw)
    assert torch.equal(mask, torch.from_numpy(read_train_ids(frames[0].label)))
    assert set(mask.unique().tolist()) <= set(range(19)) | {255}


def test_test_split_items_get_an_all_ignore_mask(synth_root):
    _, mask = CityscapesDataset(list_frames(synth_root, "test", label_source=None))[0]
    assert torch.all(mask == 255)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_corrupt_image_names_the_file_even_in_a_dataloader_worker(mutable_root):
    frames = list_frames(mutable_root, "val")
    _truncate(frames[0].image)
    with pytest.raises(UserError, match=re.escape(str(frames[0].image))):
        read_image(frames[0].image)
    loader = DataLoader(CityscapesDataset(frames[:1]), batch_size=1, num_workers=1, worker_init_fn=worker_init)
    with pytest.raises(UserError, match=re.escape(str(frames[0].image))):
        next(iter(loader))


def test_corrupt_label_names_the_file(mutable_root):
    frame = list_frames(mutable_root, "val")[0]
    _truncate(frame.label)
    with pytest.raises(UserError, match=re.escape(str(frame.label))):
        CityscapesDataset([frame])[0]


def test_user_error_survives_pickling():
    error = pickle.loads(pickle.dumps(UserError("bad file x.png")))
    assert isinstance(error, UserError) and str(error) == "bad file x.png"


def test_label_ids_where_train_ids_are_expected(mutable_root):
    frame = list_frames(mutable_root, "val")[0]
    shutil.copy(frame.label_ids, frame.label)  # labelIds hold ids like 26 (car) or 33 outside 0..18
    values = sorted(set(np.unique(np.asarray(Image.open(frame.label_ids))).tolist()) - set(range(19)) - {255})
    assert values, "the synthetic frame should hold some labelIds above 18"
    with pytest.raises(UserError, match="label_source 'ids'") as info:
        read_train_ids(frame.label)
    assert str(frame.label) in str(info.value) and str(values[0]) in str(info.value)


def test_image_and_label_size_mismatch(mutable_root):
    frame = list_frames(mutable_root, "val")[0]
    small = Image.open(frame.label).resize((32, 16), Image.NEAREST)
    small.save(frame.label)
    with pytest.raises(UserError, match="same size"):
        CityscapesDataset([frame])[0]


def test_worker_init_limits_torch_threads():
    before = torch.get_num_threads()
    try:
        worker_init(0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
