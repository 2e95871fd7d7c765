"""Our own loaders fail on a checkpoint whose weights do not match the model, instead of initialising at random."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from occvla_hf.demo import EMBEDDED_MODEL_PATH
from occvla_hf.evaluation.runner import load_model_and_processor
from occvla_hf.modeling import OccVLAForPlanning, load_pretrained
from occvla_hf.processing import OccVLAProcessor
from occvla_hf.training.joint import build_model_and_processor
from tests.conftest import tiny_config, tiny_occupancy_vae

WEIGHTS = "model.safetensors"

LOADERS = {
    "load_pretrained": lambda path: load_pretrained(OccVLAForPlanning, path),
    "eval-runner": lambda path: load_model_and_processor(path, device="cpu"),
    "recipe": lambda path: build_model_and_processor({"from_pretrained": str(path)}),
}


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = OccVLAForPlanning(tiny_config())
    model.set_occupancy_vae(tiny_occupancy_vae())
    model.save_pretrained(tmp_path)
    return tmp_path


def edit_weights(folder: Path, edit) -> None:
    state = load_file(folder / WEIGHTS)
    edit(state)
    save_file(state, folder / WEIGHTS, metadata={"format": "pt"})


def drop(prefix: str):
    return lambda state: state.pop(next(key for key in sorted(state) if key.startswith(prefix)))


@pytest.mark.parametrize("loader", sorted(LOADERS))
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (drop("trajectory_head."), r"missing \(would be random\): \['trajectory_head\."),
        (drop("occupancy_vae."), r"missing \(would be random\): \['occupancy_vae\."),
        (drop("model.vision_tower."), r"missing \(would be random\): \['model\.vision_tower\."),
        (lambda state: state.update({"extra_head.weight": torch.zeros(2)}), r"unexpected: \['extra_head\.weight'\]"),
        (
            lambda state: state.update({"trajectory_head.ego_status_path.bias": torch.zeros(3)}),
            r"mismatched shapes: \['trajectory_head\.ego_status_path\.bias \(checkpoint \(3,\), model \(12,\)\)",
        ),
    ],
    ids=["missing-head", "missing-vae", "missing-vision", "unexpected", "mismatched"],
)
def test_weights_that_do_not_match_fail(checkpoint: Path, loader: str, edit, message: str) -> None:
    edit_weights(checkpoint, edit)
    with pytest.raises(ValueError, match=message):
        LOADERS[loader](checkpoint)


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_folder_without_config_fails_before_building_a_model(tmp_path: Path, monkeypatch, loader: str) -> None:
    (tmp_path / WEIGHTS).write_bytes(b"")

    def build(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(OccVLAForPlanning, "__init__", build)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: not a checkpoint folder, it has no config.json"):
        LOADERS[loader](tmp_path)


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_pickle_weights_are_not_read(checkpoint: Path, loader: str) -> None:
    state = load_file(checkpoint / WEIGHTS)
    torch.save(state, checkpoint / "pytorch_model.bin")
    (checkpoint / WEIGHTS).unlink()
    with pytest.raises(OSError, match="safetensors"):
        LOADERS[loader](checkpoint)


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_empty_occupancy_vae_config_does_not_attach_a_random_vae(tmp_path: Path, loader: str) -> None:
    OccVLAForPlanning(tiny_config()).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "occupancy_vae_config": {}}))
    with pytest.raises(Exception, match="occupancy_vae_config: expected a saved OccupancyVAEConfig") as error:
        LOADERS[loader](tmp_path)
    assert "StrictDataclass" in type(error.value).__name__


def test_a_matching_checkpoint_loads_with_its_weights(checkpoint: Path) -> None:
    reference = load_file(checkpoint / WEIGHTS)
    state = load_pretrained(OccVLAForPlanning, checkpoint).state_dict()
    for key, tensor in reference.items():
        torch.testing.assert_close(state[key], tensor)


def test_the_embedded_model_loads_strictly() -> None:
    load_pretrained(OccVLAForPlanning, EMBEDDED_MODEL_PATH)
    OccVLAProcessor.from_pretrained(EMBEDDED_MODEL_PATH)
