"""Cached occupancy latents: the loss with the cache equals the loss encoding on the fly, the file round trip, the
checks against another VAE or split, the collator and loss counts, and the stage-2 recipe switch."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from datasets import Dataset

from occvla_hf.constants import OCC_GRID_SHAPE
from occvla_hf.data.load import load_configs
from occvla_hf.data.occ3d import decode_mask, decode_semantics
from occvla_hf.modeling import OccupancyVAE, OccVLAForPlanning
from occvla_hf.modeling.loss import loss_item_counts
from occvla_hf.training.collator import OccVLADataCollator
from occvla_hf.training.joint import JointDataset, build_model_and_processor, train_joint
from occvla_hf.training.latent_cache import (
    OccupancyLatentCache,
    build_occupancy_latent_cache,
    main,
    open_occupancy_latent_cache,
    vae_fingerprint,
)
from tests.conftest import TINY_MODEL_CONFIG, full_grid_vae_config, make_batch, tiny_config
from tests.training.conftest import planning_sample

pytestmark = pytest.mark.usefixtures("single_torch_thread")

LATENT_SHAPE = (4, 25, 25)  # of the tiny full-grid VAEs below (and of `occupancy_vae_dir`)


def full_grid_vae(latent_type: str, seed: int = 0) -> OccupancyVAE:
    """An untrained VAE over the Occ3D grid (200, 200, 16) with a (4, 25, 25) latent, frozen."""
    torch.manual_seed(seed)
    return OccupancyVAE(full_grid_vae_config(latent_type)).requires_grad_(False).eval()


@pytest.fixture(scope="module")
def occupancy_rows(training_data_dir: Path) -> Dataset:
    return load_configs(training_data_dir)["occupancy"]["mini_train"]


def full_grid_model(vae: OccupancyVAE, voxel_weight: float) -> OccVLAForPlanning:
    torch.manual_seed(0)
    config = tiny_config(
        occupancy_latent_shape=LATENT_SHAPE, num_occupancy_queries_hw=(5, 5), occupancy_voxel_loss_weight=voxel_weight
    )
    model = OccVLAForPlanning(config)
    model.set_occupancy_vae(vae)
    return model.train()


@pytest.mark.parametrize("latent_type", ["kl", "vq"])
def test_cached_latents_give_the_loss_of_encoding_on_the_fly(occupancy_rows, tmp_path, latent_type):
    vae = full_grid_vae(latent_type)
    cache = build_occupancy_latent_cache(occupancy_rows, vae, tmp_path / "train.safetensors", batch_size=4)
    assert len(cache) == len(occupancy_rows) and cache.latent_shape == LATENT_SHAPE
    rows = occupancy_rows.select([1, 4])
    grids = torch.from_numpy(np.stack([decode_semantics(data) for data in rows["semantics"]]))
    masks = torch.from_numpy(np.stack([decode_mask(data) for data in rows["mask_camera"]]))
    latents = torch.stack([cache[token] for token in rows["sample_token"]])
    assert latents.dtype == torch.float32
    # The cache encoded these grids in batches of 4 (rows 0-3, 4-5), the forward below encodes them as a batch of 2:
    # the same fp32 encode, only a convolution may sum in a batch-size-dependent order. So: equal up to fp32
    # rounding (and, for VQ, the same codes).
    with torch.no_grad():
        torch.testing.assert_close(latents, vae.encode(grids), rtol=1e-5, atol=1e-6)

    model = full_grid_model(vae, voxel_weight=0.5)
    batch = make_batch(model.config)
    on_the_fly = model(**batch, occupancy=grids, occupancy_mask=masks)
    cached = model(**batch, occupancy=grids, occupancy_mask=masks, occupancy_latents=latents)
    assert torch.equal(cached.occupancy_latent, on_the_fly.occupancy_latent)  # the prediction ignores targets
    torch.testing.assert_close(cached.occupancy_latent_loss, on_the_fly.occupancy_latent_loss, rtol=1e-5, atol=1e-7)
    # The voxel term is scored on the grids through the frozen decoder either way: the same computation.
    assert torch.equal(cached.occupancy_voxel_loss, on_the_fly.occupancy_voxel_loss)
    torch.testing.assert_close(cached.loss, on_the_fly.loss, rtol=1e-5, atol=1e-7)

    model.config.occupancy_voxel_loss_weight = 0.0  # without the voxel term the cache alone suffices
    latents_only = model(**batch, occupancy_latents=latents)
    assert latents_only.occupancy_voxel_loss is None
    assert torch.equal(latents_only.occupancy_latent_loss, cached.occupancy_latent_loss)
    latents_only.loss.backward()
    assert model.occupancy_head.fc2.weight.grad.abs().sum() > 0


def test_float16_cache_is_within_half_precision_rounding(occupancy_rows, tmp_path):
    vae = full_grid_vae("kl")
    exact = build_occupancy_latent_cache(occupancy_rows, vae, tmp_path / "fp32.safetensors")
    half = build_occupancy_latent_cache(occupancy_rows, vae, tmp_path / "fp16.safetensors", dtype="float16")
    token = occupancy_rows["sample_token"][0]
    assert half[token].dtype == torch.float16
    # float16 keeps 11 significant bits: a relative error of at most 2^-11 (plus subnormals near 0).
    torch.testing.assert_close(half[token].float(), exact[token], rtol=2**-11, atol=2**-14)
    assert (tmp_path / "fp16.safetensors").stat().st_size < 0.6 * (tmp_path / "fp32.safetensors").stat().st_size


def test_cache_is_checked_against_the_vae_and_the_split(occupancy_rows, tmp_path):
    vae = full_grid_vae("kl")
    path = tmp_path / "train.safetensors"
    built = open_occupancy_latent_cache(occupancy_rows.select(range(4)), vae, path)
    assert built.vae_fingerprint == vae_fingerprint(vae) != vae_fingerprint(full_grid_vae("kl", seed=1))
    written = path.stat().st_mtime_ns
    reopened = open_occupancy_latent_cache(occupancy_rows.select(range(3)), vae, path)  # a subset: reused as is
    assert path.stat().st_mtime_ns == written and reopened.sample_tokens == built.sample_tokens
    with pytest.raises(ValueError, match="another occupancy VAE"):
        open_occupancy_latent_cache(occupancy_rows.select(range(4)), full_grid_vae("kl", seed=1), path)
    with pytest.raises(ValueError, match="lacks 2 of the split's 6 sample tokens"):
        open_occupancy_latent_cache(occupancy_rows, vae, path)
    (tmp_path / "other.safetensors").write_bytes(b"not a cache")
    with pytest.raises(Exception):
        OccupancyLatentCache(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError, match="occupancy_latent_cache"):
        OccupancyLatentCache(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="dtype"):
        build_occupancy_latent_cache(occupancy_rows, vae, tmp_path / "x.safetensors", dtype="bfloat16")


def test_cache_reads_rows_lazily_and_survives_pickling_for_dataloader_workers(occupancy_rows, tmp_path):
    cache = build_occupancy_latent_cache(occupancy_rows, full_grid_vae("kl"), tmp_path / "train.safetensors")
    token = occupancy_rows["sample_token"][2]
    expected = cache[token]
    copied = pickle.loads(pickle.dumps(cache))
    assert copied._handle is None  # reopened on first access in the worker
    assert torch.equal(copied[token], expected) and token in copied and "no-such-token" not in copied


def test_model_rejects_bad_cached_latents() -> None:
    model = full_grid_model(full_grid_vae("kl"), voxel_weight=0.0)
    batch = make_batch(model.config)
    good = torch.zeros(2, *LATENT_SHAPE)
    for bad in (good[:, :2], good.long(), torch.full_like(good, float("nan"))):
        with pytest.raises(ValueError, match="occupancy_latents"):
            model(**batch, occupancy_latents=bad)
    model.config.occupancy_voxel_loss_weight = 1.0
    with pytest.raises(ValueError, match="occupancy: the voxel loss"):
        model(**batch, occupancy_latents=good)
    model.occupancy_vae = None
    model.config.occupancy_voxel_loss_weight = 0.0
    assert model(**batch, occupancy_latents=good).occupancy_latent_loss is not None  # the latent term needs no VAE


def test_collator_batches_cached_latents_and_counts_them() -> None:
    config = tiny_config()
    samples = [planning_sample(config, index) for index in range(3)]
    for sample in samples:
        sample["occupancy_latents"] = torch.randn(*config.occupancy_latent_shape)
    cached_only = [{k: v for k, v in sample.items() if k not in ("occupancy", "occupancy_mask")} for sample in samples]
    batch = OccVLADataCollator(pad_token_id=0)(cached_only)
    assert torch.equal(batch["occupancy_latents"], torch.stack([s["occupancy_latents"] for s in samples]))
    counts = loss_item_counts(batch)
    assert counts["occupancy_latent_loss"] == 3 and counts["occupancy_voxel_loss"] == 0
    assert "occupancy_latents" not in OccVLADataCollator(pad_token_id=0, occupancy_supervision=False)(cached_only)
    partial = [*cached_only[:2], {k: v for k, v in cached_only[2].items() if k != "occupancy_latents"}]
    partial_batch = OccVLADataCollator(pad_token_id=0)(partial)
    assert partial_batch["occupancy_sample_mask"].tolist() == [True, True, False]
    assert not partial_batch["occupancy_latents"][2].any()
    assert loss_item_counts(partial_batch)["occupancy_latent_loss"] == 2


def test_joint_dataset_serves_cached_latents_without_decoding_grids(training_data_dir, occupancy_rows, tmp_path):
    saved = load_configs(training_data_dir)
    cache = build_occupancy_latent_cache(occupancy_rows, full_grid_vae("kl"), tmp_path / "train.safetensors")
    dataset = JointDataset({"planning": saved["planning"]["mini_train"]}, None, cache)
    row = dataset[0]
    assert "semantics" not in row and torch.equal(row["occupancy_latent"], cache[row["sample_token"]])
    with_grids = JointDataset({"planning": saved["planning"]["mini_train"]}, occupancy_rows, cache)[0]
    assert with_grids["semantics"].shape == OCC_GRID_SHAPE and "occupancy_latent" in with_grids


def test_unlabelled_rows_take_their_latents_from_the_cache(training_data_dir, occupancy_rows, tmp_path):
    planning = load_configs(training_data_dir)["planning"]["mini_train"]
    planning = planning.add_column("labelled", [index >= 3 for index in range(len(planning))])  # rows 0-2 unlabelled
    cache = build_occupancy_latent_cache(occupancy_rows, full_grid_vae("kl"), tmp_path / "train.safetensors")
    dataset = JointDataset({"planning": planning}, None, cache)  # the voxel loss off: latents alone
    assert dataset.row_counts["planning_occupancy_only"] == 3
    pairs = [dataset[(0, partner)] for partner in range(3)]  # labelled row 0 with each occupancy-only row
    for row in [dataset[index] for index in range(len(dataset))] + [pair[1] for pair in pairs]:
        assert "semantics" not in row and torch.equal(row["occupancy_latent"], cache[row["sample_token"]])
    processor = build_model_and_processor({"config": TINY_MODEL_CONFIG})[1]
    batch = OccVLADataCollator(processor)([pair[1] for pair in pairs])
    assert (batch["labels"] == -100).all() and batch["occupancy_latents"].shape == (3, *LATENT_SHAPE)
    assert loss_item_counts(batch)["occupancy_latent_loss"] == 3
    paired = OccVLADataCollator(processor)(pairs[:2])  # two indices of the sampler: four rows
    assert paired["occupancy_latents"].shape == (4, *LATENT_SHAPE)
    assert [bool((labels != -100).any()) for labels in paired["labels"]] == [True, False, True, False]
    kept = set(planning["sample_token"][1:])  # a cache without the first keyframe: its row has nothing to learn
    partial = occupancy_rows.select([i for i, token in enumerate(occupancy_rows["sample_token"]) if token in kept])
    partial = build_occupancy_latent_cache(partial, full_grid_vae("kl"), tmp_path / "partial.safetensors")
    assert JointDataset({"planning": planning}, None, partial).row_counts["planning_occupancy_only"] == 2


def test_recipe_with_the_latent_cache_trains_on_the_same_losses(tiny_recipe, tmp_path):
    steps = {"max_steps": 3, "per_device_train_batch_size": 2}
    on_the_fly = copy.deepcopy(tiny_recipe)
    on_the_fly["training"].update(steps, output_dir=str(tmp_path / "fly"))
    on_the_fly["data"]["tasks"] = ["planning"]  # every batch has occupancy targets
    cached = copy.deepcopy(on_the_fly)
    cached["training"]["output_dir"] = str(tmp_path / "cached")
    cached["occupancy_latent_cache"] = str(tmp_path / "latents")
    logs, encode_calls = {}, {}
    for name, recipe in (("fly", on_the_fly), ("cached", cached)):
        with mock.patch.object(OccupancyVAE, "encode", autospec=True, side_effect=OccupancyVAE.encode) as encode:
            history = train_joint(recipe).log_history
        encode_calls[name] = encode.call_count
        logs[name] = [entry for entry in history if "loss" in entry and "train_loss" not in entry]
    assert (tmp_path / "latents" / "mini_train.safetensors").is_file()
    assert encode_calls == {"fly": 3, "cached": 1}  # once per step, or once to build the cache of the 6 rows
    assert len(logs["cached"]) == len(logs["fly"]) == 3
    for fly, with_cache in zip(logs["fly"], logs["cached"]):
        assert fly.keys() == with_cache.keys() and "occupancy_latent_loss" in fly
        for key in ("loss", "lm_loss", "trajectory_loss", "occupancy_latent_loss"):
            # Same seed, data order and initial model; only the latent target's source differs (fp32 rounding of
            # a batch-size-dependent convolution at most, compounded over 3 optimiser steps).
            assert with_cache[key] == pytest.approx(fly[key], rel=1e-4), key


def test_command_line_writes_the_cache_the_recipe_reads(training_data_dir, occupancy_rows, tmp_path):
    vae = full_grid_vae("vq")
    vae.save_pretrained(tmp_path / "vae")
    occupancy_dir = training_data_dir / "arrow" / "occupancy"
    main([str(occupancy_dir), str(tmp_path / "vae"), str(tmp_path / "latents"), "--split", "mini_train"])
    cache = OccupancyLatentCache(tmp_path / "latents" / "mini_train.safetensors")
    cache.check(vae, occupancy_rows["sample_token"])
    assert len(cache) == len(occupancy_rows)
    with pytest.raises(SystemExit, match="--split"):
        main([str(occupancy_dir), str(tmp_path / "vae"), str(tmp_path / "latents"), "--split", "nope"])
