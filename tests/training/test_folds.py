"""Folds: disjoint, complete, city-grouped, balanced, reproducible, and never silently replaced."""

from __future__ import annotations

import json

import pytest

from cityseg.errors import UserError
from cityseg.training.folds import city_of, fold_table, load_folds, make_folds, write_folds

# Images per city in the real Cityscapes train split: unequal sizes make balancing matter.
CITY_SIZES = {
    "aachen": 174,
    "bochum": 96,
    "bremen": 316,
    "cologne": 154,
    "darmstadt": 85,
    "dusseldorf": 221,
    "erfurt": 109,
    "hamburg": 248,
    "hanover": 196,
    "jena": 119,
    "krefeld": 99,
    "monchengladbach": 94,
    "strasbourg": 365,
    "stuttgart": 196,
    "tubingen": 144,
    "ulm": 95,
    "weimar": 142,
    "zurich": 122,
}
IDS = [f"{city}_{n:06d}_000019" for city, size in CITY_SIZES.items() for n in range(size)]


def check_partition(folds, ids):
    seen_as_val = []
    for fold in folds["folds"]:
        assert not set(fold["train"]) & set(fold["val"])
        assert set(fold["train"]) | set(fold["val"]) == set(ids)
        seen_as_val += fold["val"]
    assert sorted(seen_as_val) == sorted(ids)  # every image is held out exactly once


def test_city_split_groups_and_balances():
    folds = make_folds(IDS, k=5, split="city", seed=0)
    assert (folds["k"], folds["split"], folds["seed"]) == (5, "city", 0)
    check_partition(folds, IDS)
    for fold in folds["folds"]:
        assert not {city_of(i) for i in fold["train"]} & {city_of(i) for i in fold["val"]}
    sizes = [len(f["val"]) for f in folds["folds"]]
    # Greedy largest-first assignment keeps folds within one (smallest) city of each other here;
    # a naive round-robin over cities would differ by hundreds.
    assert max(sizes) - min(sizes) <= min(CITY_SIZES.values()), sizes


def test_same_seed_same_folds_other_seed_other_folds(synth_root):
    from cityseg.data.frames import list_frames

    frames = list_frames(synth_root, "train")
    assert make_folds(frames, k=5, seed=3) == make_folds(list(reversed(frames)), k=5, seed=3)
    # the synthetic cities all have 2 images, so the seed alone decides which cities share a fold
    assert make_folds(frames, k=5, seed=0)["folds"] != make_folds(frames, k=5, seed=1)["folds"]


def test_random_split_is_plain_kfold():
    folds = make_folds(IDS, k=5, split="random", seed=0)
    check_partition(folds, IDS)
    assert make_folds(IDS, k=5, split="random", seed=0) == folds
    val_cities = {city_of(i) for i in folds["folds"][0]["val"]}
    train_cities = {city_of(i) for i in folds["folds"][0]["train"]}
    assert val_cities & train_cities  # shuffled images: cities end up on both sides
    assert max(len(f["val"]) for f in folds["folds"]) - min(len(f["val"]) for f in folds["folds"]) <= 1


@pytest.mark.parametrize(
    ("k", "split", "message"), [(1, "city", "at least 2"), (19, "city", "18 cities"), (3, "by-weather", "split")]
)
def test_bad_fold_requests(k, split, message):
    with pytest.raises(UserError, match=message):
        make_folds(IDS, k=k, split=split)


def test_write_folds_refuses_different_content(tmp_path):
    path = tmp_path / "folds.json"
    folds = make_folds(IDS, k=5)
    write_folds(path, folds)
    write_folds(path, folds)  # identical: accepted
    before = path.read_bytes()
    with pytest.raises(UserError, match="different folds"):
        write_folds(path, make_folds(IDS, k=4))
    assert path.read_bytes() == before
    assert load_folds(path) == json.loads(before)


def test_fold_table_rows():
    folds = make_folds(IDS, k=3)
    rows = fold_table(folds, IDS)
    assert [r["fold"] for r in rows] == [0, 1, 2]
    assert sum(r["n_val"] for r in rows) == len(IDS)
    assert all(r["n_train"] + r["n_val"] == len(IDS) for r in rows)
    assert sorted(c for r in rows for c in r["cities"]) == sorted(CITY_SIZES)
    with pytest.raises(UserError, match="not in the dataset"):
        fold_table(folds, IDS[:-1])


def test_fold_table_reads_a_folds_file(tmp_path):
    folds = make_folds(IDS, k=2)
    write_folds(tmp_path / "folds.json", folds)
    assert fold_table(tmp_path / "folds.json") == fold_table(folds)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,  # nesting a recursive parser cannot follow
        '{"k": 2, "split": "city", "seed": 0, "folds": [{"train": [["a"]], "val": []}, {"train": [], "val": []}]}',
        '{"k": "2", "split": "city", "seed": 0, "folds": [{"train": [], "val": []}, {"train": [], "val": []}]}',
        '{"k": 2, "split": "city", "seed": 0, "folds": [{"train": [], "val": []}, 7]}',
        '{"k": 2, "split": "weather", "seed": 0, "folds": [{"train": [], "val": []}, {"train": [], "val": []}]}',
        '{"k": 2, "folds": [{"train": [], "val": []}, {"train": [], "val": []}]}',
        '{"k": true, "split": "city", "seed": 0, "folds": [{"train": [], "val": []}]}',
    ],
)
def test_damaged_folds_file_is_a_user_error_naming_it(tmp_path, text):
    path = tmp_path / "folds.json"
    path.write_text(text)
    with pytest.raises(UserError, match="folds.json"):
        load_folds(path)
