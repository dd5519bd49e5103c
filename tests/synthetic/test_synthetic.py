"""The synthetic dataset: Cityscapes layout and formats, official-tool consistency, content, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.helpers.labels import id2label, name2label
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from cityscapesscripts.preparation.json2labelImg import json2labelImg
from conftest import TINY_SIZE
from PIL import Image

from cityseg.cli import main
from cityseg.errors import UserError
from cityseg.labels import IGNORE_INDEX, NUM_CLASSES, ids_to_train_ids
from cityseg.synthetic import CITY_NAMES, MARKER, city_names, write_dataset
from cityseg.synthetic.geometry import clip_polygon

# The fixture's shape (tests/conftest.py).
FIXTURE_CITIES = {"train": 10, "val": 2, "test": 2}
PER_CITY = 2

STEM = r"(?P<city>[a-z]+\d*)_(?P<seq>\d{6})_(?P<frame>\d{6})"
IMAGE_RE = re.compile(rf"^leftImg8bit/(?P<split>train|val|test)/(?P<dir>[a-z]+\d*)/{STEM}_leftImg8bit\.png$")
GT_RE = re.compile(
    rf"^gtFine/(?P<split>train|val|test)/(?P<dir>[a-z]+\d*)/{STEM}_gtFine_(?P<kind>polygons\.json|labelIds\.png|instanceIds\.png|color\.png)$"
)
GT_KINDS = ("polygons.json", "labelIds.png", "instanceIds.png", "color.png")


def _relative_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _gt(image: Path, kind: str) -> Path:
    """The gtFine file of `kind` beside a leftImg8bit image."""
    parts = list(image.parts)
    parts[len(parts) - 4] = "gtFine"
    return Path(*parts[:-1]) / image.name.replace("_leftImg8bit.png", f"_gtFine_{kind}")


def _images(root: Path, split: str | None = None) -> list[Path]:
    return sorted((root / "leftImg8bit" / (split or "")).rglob("*_leftImg8bit.png"))


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


# ---------------------------------------------------------------------------------------------
# Layout and formats


def test_layout_and_names_match_cityscapes(synth_raw_root):
    files = _relative_files(synth_raw_root)
    images, gts = [], {}
    for name in files:
        if name == MARKER:
            continue
        if m := IMAGE_RE.match(name):
            assert m["dir"] == m["city"], name
            assert m["frame"] == "000019", name
            images.append(m)
        else:
            m = GT_RE.match(name)
            assert m is not None, f"unexpected file {name}"
            assert m["dir"] == m["city"], name
            gts.setdefault((m["split"], m["city"], m["seq"]), set()).add(m["kind"])
    for split, n_cities in FIXTURE_CITIES.items():
        split_images = [m for m in images if m["split"] == split]
        cities = sorted({m["city"] for m in split_images})
        assert len(split_images) == n_cities * PER_CITY
        assert set(cities) <= set(CITY_NAMES[split]), "cities must be the split's real Cityscapes cities"
        assert len(cities) == n_cities
    # every image, test included, has all four gtFine files and no gt file is orphaned
    assert set(gts) == {(m["split"], m["city"], m["seq"]) for m in images}
    assert all(kinds == set(GT_KINDS) for kinds in gts.values())


def test_marker_records_parameters(synth_raw_root):
    record = json.loads((synth_raw_root / MARKER).read_text())
    assert record["complete"] is True
    params = record["parameters"]
    assert params["size"] == list(TINY_SIZE)
    assert (params["train_cities"], params["val_cities"], params["test_cities"]) == tuple(FIXTURE_CITIES.values())
    assert params["per_city"] == PER_CITY and params["seed"] == 0
    assert record["images"] == {s: n * PER_CITY for s, n in FIXTURE_CITIES.items()}


def test_images_are_rgb_of_the_requested_size(synth_raw_root):
    for image in _images(synth_raw_root):
        with Image.open(image) as im:
            assert im.mode == "RGB" and im.size == TINY_SIZE


def test_json_loads_with_official_annotation(synth_raw_root):
    width, height = TINY_SIZE
    for image in _images(synth_raw_root):
        path = _gt(image, "polygons.json")
        raw = json.loads(path.read_text())
        assert set(raw) == {"imgHeight", "imgWidth", "objects"}
        annotation = Annotation()
        annotation.fromJsonFile(str(path))
        assert (annotation.imgWidth, annotation.imgHeight) == TINY_SIZE
        assert annotation.objects, path
        for obj in annotation.objects:
            assert obj.label in name2label
            assert len(obj.polygon) >= 3
            xs, ys = [p.x for p in obj.polygon], [p.y for p in obj.polygon]
            assert all(isinstance(v, int) for v in xs + ys)
            assert 0 <= min(xs) and max(xs) < width and 0 <= min(ys) and max(ys) < height


def test_label_pngs_equal_official_rendering_of_the_json(synth_raw_root, tmp_path):
    for image in _images(synth_raw_root)[::3]:
        for encoding, kind in (("ids", "labelIds.png"), ("color", "color.png")):
            rendered = tmp_path / f"{encoding}.png"
            json2labelImg(str(_gt(image, "polygons.json")), str(rendered), encoding)
            shipped = _gt(image, kind)
            assert np.array_equal(_read(shipped), _read(rendered)), shipped
            assert shipped.read_bytes() == rendered.read_bytes(), shipped


def test_instance_ids_are_uint16_and_consistent_with_label_ids(synth_raw_root):
    several_instances_of_a_class = False
    for image in _images(synth_raw_root):
        path = _gt(image, "instanceIds.png")
        with Image.open(path) as im:
            assert im.mode == "I;16"
        instances = _read(path)
        assert instances.dtype == np.uint16
        label_ids = _read(_gt(image, "labelIds.png"))
        annotation = Annotation()
        annotation.fromJsonFile(str(_gt(image, "polygons.json")))
        assert np.array_equal(instances, np.asarray(createInstanceImage(annotation, "ids")))
        is_instance = instances >= 1000
        assert np.array_equal(instances[is_instance] // 1000, label_ids[is_instance])
        assert np.array_equal(instances[~is_instance], label_ids[~is_instance])
        # thing classes always carry instance ids, stuff classes never do
        has_instances = np.array([id2label[i].hasInstances if i in id2label else False for i in range(256)])
        assert np.array_equal(has_instances[label_ids], is_instance)
        for cls in np.unique(instances[is_instance] // 1000):
            if len(np.unique(instances[instances // 1000 == cls])) > 1:
                several_instances_of_a_class = True
    assert several_instances_of_a_class


def test_city_names_extend_the_real_list_with_numbers():
    names = city_names("val", 5)
    assert names == ["frankfurt", "lindau", "munster", "frankfurt2", "lindau2"]
    assert len(set(city_names("train", 40))) == 40
    assert all(re.fullmatch(r"[a-z]+\d*", n) for n in city_names("test", 13))


def test_polygons_are_clipped_to_the_frame():
    # a rectangle hanging over the top-left corner keeps exactly its visible part
    clipped = clip_polygon(np.array([(-10.0, -10.0), (50.0, -10.0), (50.0, 20.0), (-10.0, 20.0)]), 128, 64)
    assert sorted(map(tuple, clipped)) == [(0, 0), (0, 20), (50, 0), (50, 20)]
    assert clip_polygon(np.array([(200.0, 0.0), (300.0, 0.0), (250.0, 30.0)]), 128, 64) is None


# ---------------------------------------------------------------------------------------------
# Content


def test_every_frame_has_all_eval_classes_and_some_void(synth_raw_root):
    void_kinds = set()
    for image in _images(synth_raw_root):
        label_ids = _read(_gt(image, "labelIds.png"))
        train_ids = ids_to_train_ids(label_ids)
        assert set(np.unique(train_ids).tolist()) >= set(range(NUM_CLASSES)), image.name
        assert (train_ids == IGNORE_INDEX).any(), image.name
        void_kinds |= {id2label[i].name for i in np.unique(label_ids[train_ids == IGNORE_INDEX]).tolist()}
    assert {"ego vehicle", "out of roi", "rectification border", "static", "dynamic"} <= void_kinds


def _pixels(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) float RGB and (N,) trainIds of every evaluated pixel of a split."""
    colours, labels = [], []
    for image in _images(root, split):
        train_ids = ids_to_train_ids(_read(_gt(image, "labelIds.png"))).ravel()
        keep = train_ids != IGNORE_INDEX
        colours.append(_read(image).reshape(-1, 3)[keep].astype(np.float32))
        labels.append(train_ids[keep])
    return np.concatenate(colours), np.concatenate(labels)


def test_colour_alone_is_a_useful_but_incomplete_cue(synth_raw_root):
    """A nearest-class-mean classifier on pixel colour, fit on train and scored on val.

    Balanced accuracy (mean per-class recall) has chance level 1/19 = 0.05. Above 0.15 (three
    times chance) says classes have distinct colour distributions, so a small network can learn
    them quickly; below 0.8 says single pixel colours overlap enough that a model must also use
    texture and context, as on real images.
    """
    colours, labels = _pixels(synth_raw_root, "train")
    means = np.stack([colours[labels == c].mean(axis=0) for c in range(NUM_CLASSES)])  # (19, 3)
    val_colours, val_labels = _pixels(synth_raw_root, "val")
    distances = ((val_colours[:, None, :] - means[None]) ** 2).sum(-1)  # (N, 19)
    predicted = distances.argmin(axis=1)
    recall = [(predicted[val_labels == c] == c).mean() for c in range(NUM_CLASSES)]
    assert 0.15 < float(np.mean(recall)) < 0.8


# ---------------------------------------------------------------------------------------------
# Determinism and sizes


def _frame_files(root: Path, stem_glob: str) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob(stem_glob) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_workers_or_shape(synth_raw_root, tmp_path):
    # Each frame is seeded by (seed, split, city, index), so a smaller dataset written by two
    # worker processes must reproduce the fixture's first frames byte for byte.
    root = tmp_path / "again"
    written = write_dataset(
        root,
        size=TINY_SIZE,
        train_cities=2,
        val_cities=0,
        test_cities=0,
        per_city=1,
        workers=2,
        progress=False,
    )
    assert written == {"train": 2, "val": 0, "test": 0}
    again = _frame_files(root, "*_000000_000019_*")
    assert len(again) == 2 * (1 + len(GT_KINDS))
    fixture = _frame_files(synth_raw_root, "*_000000_000019_*")
    assert all(fixture[name] == data for name, data in again.items())


def test_other_seed_other_frames(synth_raw_root, tmp_path):
    root = tmp_path / "seed1"
    write_dataset(root, size=TINY_SIZE, train_cities=1, val_cities=0, test_cities=0, per_city=1, seed=1, progress=False)
    for name, data in _frame_files(root, "aachen_000000_000019_*").items():
        assert (synth_raw_root / name).read_bytes() != data, name


def test_full_cityscapes_size(tmp_path):
    root = tmp_path / "big"
    write_dataset(root, size=(2048, 1024), train_cities=1, val_cities=0, test_cities=0, per_city=1, progress=False)
    (image,) = _images(root)
    assert Image.open(image).size == (2048, 1024)
    for kind in ("labelIds.png", "instanceIds.png", "color.png"):
        assert Image.open(_gt(image, kind)).size == (2048, 1024)
    label_ids = _read(_gt(image, "labelIds.png"))
    assert set(np.unique(ids_to_train_ids(label_ids)).tolist()) >= set(range(NUM_CLASSES))
    polygons = json.loads(_gt(image, "polygons.json").read_text())
    # polygons scale with the frame: the road reaches far beyond what a tiny frame could hold
    assert max(x for obj in polygons["objects"] for x, _ in obj["polygon"]) > 1500


# ---------------------------------------------------------------------------------------------
# Refusals and the CLI


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": (32, 16)}, "at least"),
        ({"size": (0, 64)}, "at least"),
        ({"train_cities": 0, "val_cities": 0, "test_cities": 0}, "nothing to write"),
        ({"per_city": 0}, "nothing to write"),
        ({"train_cities": -1}, "0 or more"),
        ({"seed": -3}, "0 or more"),
    ],
)
def test_bad_parameters_raise_user_error(tmp_path, kwargs, match):
    with pytest.raises(UserError, match=match):
        write_dataset(tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()
    }


def test_cli_writes_and_summarises(tmp_path, capsys):
    out = tmp_path / "cs"
    args = ["synth", str(out), "--size", "128x64", "--train-cities", "2", "--val-cities", "1", "--test-cities", "1",
            "--per-city", "1", "--workers", "1", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    summary = capsys.readouterr().out
    assert str(out) in summary and "train" in summary
    assert len(_images(out)) == 4
    # a second run with the same options may overwrite its own earlier output
    assert main(args) == 0
    # ...but not with other options, which would leave a mixed dataset
    before = _snapshot(out)
    assert main(args[:-1] + ["--seed", "5", "--no-progress"]) == 2
    assert "seed" in capsys.readouterr().err
    assert _snapshot(out) == before


@pytest.mark.parametrize("size", ["0x64", "32x16", "wide", "128x"])
def test_cli_rejects_bad_sizes(tmp_path, size, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["synth", str(tmp_path / "cs"), "--size", size])
    assert exc.value.code == 2
    assert "--size" in capsys.readouterr().err
    assert not (tmp_path / "cs").exists()


def test_cli_refuses_a_foreign_non_empty_folder(tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "leftImg8bit").mkdir(parents=True)
    (out / "notes.txt").write_text("my own files")
    (out / "leftImg8bit" / "keep.png").write_bytes(b"not really a png")
    before = _snapshot(out)
    assert main(["synth", str(out), "--size", "128x64", "--workers", "1", "--no-progress"]) == 2
    assert MARKER in capsys.readouterr().err
    assert _snapshot(out) == before
    assert sorted(p.name for p in out.rglob("*")) == ["keep.png", "leftImg8bit", "notes.txt"]
