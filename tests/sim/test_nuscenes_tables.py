"""Scene naming, taxonomy tables and the world -> global placement of the nuScenes writer."""

from __future__ import annotations

import numpy as np
import pytest
from nuscenes.utils.map_mask import MapMask
from nuscenes.utils.splits import create_splits_scenes

from occvla_hf.sim.layout import DRIVEABLE, build_world
from occvla_hf.sim.nuscenes_tables import GlobalFrame, scene_names, taxonomy_tables, token, visibility_token


def test_mini_names_are_the_official_mini_scenes_in_both_splits():
    splits = create_splits_scenes()
    names = scene_names("v1.0-mini", 10)
    assert sorted(n for n, _ in names) == sorted(splits["mini_train"] + splits["mini_val"])
    assert [s for _, s in names[:2]] == ["mini_train", "mini_val"]
    for name, split in names:
        assert name in splits[split]
    with pytest.raises(ValueError, match="num_scenes"):
        scene_names("v1.0-mini", 11)


def test_trainval_names_follow_the_official_splits():
    splits = create_splits_scenes()
    names = scene_names("v1.0-trainval", 850)
    assert len({n for n, _ in names}) == 850
    assert sum(s == "val" for _, s in names) == 150
    assert all(n in splits[s] for n, s in names)
    assert scene_names("v1.0-trainval", 12) == names[:12]  # a prefix of a longer run names the same scenes
    with pytest.raises(ValueError, match="version"):
        scene_names("v1.0-test", 2)


def test_taxonomy_tables_have_the_official_sizes_and_unique_tokens():
    tables = taxonomy_tables()
    assert [len(tables[t]) for t in ("category", "attribute", "visibility", "sensor")] == [23, 8, 4, 7]
    tokens = [r["token"] for records in tables.values() for r in records]
    assert len(set(tokens)) == len(tokens)
    assert token("a", 1) == token("a", 1) != token("a", 2)


def test_category_records_carry_the_lidarseg_index_of_real_files():
    # nuScenes v1.0 category.json: 0 is noise, the 23 object categories are 1..23 alphabetically.
    index = {r["name"]: r["index"] for r in taxonomy_tables()["category"]}
    assert index["animal"] == 1 and index["human.pedestrian.adult"] == 2 and index["vehicle.car"] == 17
    assert index["vehicle.truck"] == 23 and sorted(index.values()) == list(range(1, 24))


def test_visibility_bins():
    assert [visibility_token(f) for f in (0.0, 0.39, 0.4, 0.59, 0.6, 0.79, 0.8, 1.0)] == list("11223344")


@pytest.mark.parametrize("quarter_turns", [0, 1, 2, 3])
def test_map_mask_png_agrees_with_the_ground_map_through_the_devkit(tmp_path, quarter_turns):
    world = build_world(np.random.default_rng(3), "intersection")
    ground = world.ground
    frame = GlobalFrame.for_ground(ground, quarter_turns)
    path = tmp_path / "map.png"
    frame.map_mask(ground).save(path)
    mask = MapMask(str(path), resolution=0.1)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, ground.classes.shape[0], 2000)
    cols = rng.integers(0, ground.classes.shape[1], 2000)
    points = np.array([frame.cell_center(ground, r, c) for r, c in zip(rows, cols)])
    assert points.min() >= 0.0
    on_mask = mask.is_on_mask(points[:, 0], points[:, 1])
    assert np.array_equal(on_mask, ground.classes[rows, cols] == DRIVEABLE)
    assert frame.yaw(0.0) == pytest.approx(quarter_turns * np.pi / 2)
