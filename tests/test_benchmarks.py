"""The benchmark scripts run end to end on small settings on CPU (numbers are not checked: they are measured)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import bench_closed_loop, bench_from_vlm, bench_inference, bench_recipe, bench_training
from occvla_hf.experiments.ablation_scale import SCALE_RECIPE, SCALE_VAE_RECIPE
from occvla_hf.training.recipe import load_recipe


def run_main(module, argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> list[str]:
    monkeypatch.setattr(sys, "argv", [module.__name__, *argv])
    module.main()
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]


def test_bench_inference_tiny_prints_every_row(monkeypatch, capsys) -> None:
    argv = ["--tiny", "--device", "cpu", "--dtype", "fp32", "--batches", "1", "--warmup", "0", "--repeats", "1"]
    rows = run_main(bench_inference, argv, monkeypatch, capsys)
    names = [row.split(" | ")[0].strip("| ") for row in rows[1:]]
    assert names == [
        "prefill", "prefill, no <traj>",  # 1 view
        "prefill", "prefill, no <traj>", "generate 32 tok", "plan() vs text waypoints", "trajectory: head vs text",
    ]  # fmt: skip


def test_bench_inference_fast_path_tiny_prints_every_row(monkeypatch, capsys) -> None:
    argv = ["--tiny", "--fast", "--device", "cpu", "--dtype", "fp32", "--warmup", "0", "--repeats", "1"]
    rows = run_main(bench_inference, argv, monkeypatch, capsys)
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]
    assert [(row[0], row[1]) for row in cells] == [
        ("decode step, dynamic cache", "1"), ("decode step, static cache", "1"),
        ("plan(), static cache", "1"), ("plan(), static cache", "32"),
        ("prefill, flex attention", "-"), ("Gemma-2 prefill, flex attention", "-"),
        ("Gemma-2 decode step, static cache", "-"),
    ]  # fmt: skip
    assert all(row[-1] == "CUDA only" for row in cells[4:])  # flex attention rows: CUDA only
    assert [row[3] for row in cells[:4]] == ["PaliGemma", "PaliGemma", "dynamic cache", "dynamic cache"]
    assert all(math.isfinite(float(row[2])) and math.isfinite(float(row[4])) for row in cells[:4])


def test_bench_inference_profile_masks_times_ours_against_transformers(monkeypatch, capsys) -> None:
    argv = ["--tiny", "--profile-masks", "--device", "cpu", "--dtype", "fp32", "--warmup", "0", "--repeats", "1"]
    rows = run_main(bench_inference, argv, monkeypatch, capsys)
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]
    assert [row[:2] for row in cells] == [
        ["Gemma-2 layers, eager, batch 1", "121"], ["Gemma-2 layers, flex_attention, batch 1", "121"],
        ["Gemma layers, sdpa, batch 1", "121"],
    ]  # fmt: skip
    assert all(math.isfinite(float(value)) and float(value) > 0 for row in cells for value in row[2:4])
    assert all(math.isfinite(float(row[4])) for row in cells)  # a ratio, 0.00 where a first call compiles


def test_bench_inference_profile_decode_prints_both_models(monkeypatch, capsys) -> None:
    argv = ["--tiny", "--profile-decode", "--device", "cpu", "--dtype", "fp32", "--warmup", "0", "--repeats", "1"]
    rows = run_main(bench_inference, argv, monkeypatch, capsys)
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]
    assert [row[0] for row in cells] == ["OccVLA", "PaliGemma"]
    assert all(math.isfinite(float(row[1])) and row[2] == "nan" for row in cells)  # GPU span: CUDA only


def test_bench_inference_fast_rows_picks_groups(monkeypatch, capsys) -> None:
    argv = ["--tiny", "--fast", "--device", "cpu", "--dtype", "fp32", "--warmup", "0", "--repeats", "1"]
    rows = run_main(bench_inference, [*argv, "--rows", "decode", "gemma2"], monkeypatch, capsys)
    names = [row.strip("|").split("|")[0].strip() for row in rows[1:]]
    assert names == [
        "decode step, dynamic cache", "decode step, static cache",
        "Gemma-2 prefill, flex attention", "Gemma-2 decode step, static cache",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "shape_args, dtype",
    [
        (["--tiny"], "fp32"),
        (["--shape", "tiny"], "bf16-autocast"),
        (["--tiny", "--occupancy-module", "cross_attention"], "fp32"),
    ],
)
def test_bench_training_tiny_prints_every_mode_and_checkpointing_setting(
    shape_args, dtype, monkeypatch, capsys
) -> None:
    argv = [*shape_args, "--device", "cpu", "--dtype", dtype, "--batch", "1", "--warmup", "0", "--repeats", "1"]
    rows = run_main(bench_training, argv, monkeypatch, capsys)
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]
    assert [row[:2] for row in cells] == [
        [checkpointing, mode] for checkpointing in ("off", "on") for mode in ("none", "grids", "latents")
    ]
    assert all(len(row) == 8 and row[4] == "n/a" for row in cells)  # GPU busy: CUDA only


def test_bench_from_vlm_tiny_prints_a_row_per_package(tmp_path, monkeypatch, capsys) -> None:
    repository = Path(bench_from_vlm.__file__).resolve().parents[1]
    argv = ["--work", str(tmp_path), "--shape", "tiny", "--packages", str(repository)]
    rows = run_main(bench_from_vlm, argv, monkeypatch, capsys)
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]
    assert [row[0] for row in cells] == [str(repository)]  # the checkout whose occvla_hf ran
    assert float(cells[0][2]) > 0 and float(cells[0][3]) >= float(cells[0][4]) > 0


def test_bench_training_scale_shape_is_the_scale_recipe_model() -> None:
    recipe = load_recipe(bench_training.REPO_ROOT / SCALE_RECIPE)["model"]["config"]
    vae = load_recipe(bench_training.REPO_ROOT / SCALE_VAE_RECIPE)["model"]
    model = bench_training.build_shape("scale", None, torch.device("cpu"))
    config = model.config
    assert config.vision_config.num_hidden_layers == recipe["vision_config"]["num_hidden_layers"]
    assert config.text_config.num_hidden_layers == recipe["text_config"]["num_hidden_layers"]
    assert config.text_config.hidden_size == recipe["text_config"]["hidden_size"]
    assert list(config.num_occupancy_queries_hw) == recipe["num_occupancy_queries_hw"]
    vision = recipe["vision_config"]
    assert config.image_seq_length == (vision["image_size"] // vision["patch_size"]) ** 2
    assert tuple(model.occupancy_vae.config.block_channels) == tuple(vae["block_channels"])
    assert tuple(config.occupancy_latent_shape) == tuple(model.occupancy_vae.config.latent_shape)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 30e6 <= trained <= 100e6  # the at-scale experiment's parameter range
    assert bench_training.step_flops(model, 1, True) > bench_training.step_flops(model, 1, False)


@pytest.mark.slow
def test_bench_closed_loop_prints_every_planner(monkeypatch, capsys) -> None:
    rows = run_main(bench_closed_loop, ["--types", "1"], monkeypatch, capsys)
    planners = [row.split(" | ")[0].strip("| ") for row in rows if not row.startswith(("| planner", "|---"))]
    assert planners == ["constant-velocity", "expert", "occvla-sim-small"] * 2


@pytest.mark.slow
def test_bench_recipe_tiny_trains_resumes_and_evaluates_the_shipped_recipe(tmp_path, monkeypatch, capsys) -> None:
    report_path = tmp_path / "recipe.json"
    argv = ["--preset", "tiny", "--work", str(tmp_path / "work"), "--modes", "act_ckpt", "lora", "--steps", "4",
            "--workers", "0", "--json", str(report_path)]  # fmt: skip
    rows = run_main(bench_recipe, argv, monkeypatch, capsys)
    assert [row.split(" | ")[0].strip("| ") for row in rows[1:]] == ["act_ckpt", "lora"]
    report = json.loads(report_path.read_text())
    for mode in ("act_ckpt", "lora"):
        result = report["modes"][mode]
        assert "error" not in result, result
        assert math.isfinite(result["step_ms"]) and result["trainable_params"] > 0
    assert report["modes"]["lora"]["trainable_params"] < report["modes"]["act_ckpt"]["trainable_params"]
    assert report["resume"]["ok"] and report["resume"]["global_step"] == 4
    assert set(report["evaluation"]) == {"planning", "qa"}
    assert all(value.get("metrics") for value in report["evaluation"].values())
