"""The at-scale ablation: its variant table and recipe, and a CPU smoke run (tiny sim data, a tiny model, two steps)
whose per-run JSON has every key of the shipped ablation reports plus `planning_hard`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from occvla_hf.data.schema import labelled_mask
from occvla_hf.evaluation.baselines import hard_keyframes
from occvla_hf.experiments import ablation_scale
from occvla_hf.experiments.ablation_scale import (
    LAMBDA_OCC_SWEEP,
    SCALE_RECIPE,
    VARIANTS,
    gradient_share_table,
    hard_subset,
    occupancy_gradient_shares,
    paired_difference_table,
    paired_meta_action_table,
    per_class_iou_table,
    probe_table,
    scale_tables,
)
from occvla_hf.experiments.label_scarcity import labelled_scenes
from occvla_hf.training.joint import JointRecipe, build_model_and_processor
from occvla_hf.training.recipe import load_recipe

REPO_ROOT = Path(__file__).resolve().parents[2]
# A report of the embedded model's ablation with the current latency keys; its `round` was added when the second round
# of runs was filed next to the first.
SHIPPED_REPORT = REPO_ROOT / "benchmarks" / "results" / "ablation_occupancy" / "occ_s0_r2.json"


def test_variants_are_recipe_overrides_of_one_recipe() -> None:
    assert {"occ", "no_occ", "occ_xattn", "occ_10pct", "no_occ_10pct"} <= set(VARIANTS)
    assert {f"occ_w{weight:g}" for weight in LAMBDA_OCC_SWEEP} <= set(VARIANTS)
    assert {variant.recipe for variant in VARIANTS.values()} == {SCALE_RECIPE}
    recipes = {name: load_recipe(REPO_ROOT / SCALE_RECIPE, variant.overrides) for name, variant in VARIANTS.items()}
    assert [name for name, recipe in recipes.items() if not recipe["occupancy_supervision"]] == [
        "no_occ",
        "no_occ_10pct",
        "no_occ_no_ego",
        "no_occ_history_no_ego",
    ]
    assert recipes["occ_xattn"]["model"]["config"]["occupancy_module"] == "cross_attention"
    assert recipes["occ_w0.1"]["model"]["config"]["occupancy_loss_weight"] == 0.1
    assert recipes["occ_reasoning"]["planning_target"] == "reasoning"
    assert recipes["occ_after_text"]["model"]["config"]["trajectory_position"] == "after_text"
    assert recipes["occ_history"]["model"]["config"]["ego_history_steps"] == 4
    assert recipes["occ_no_ego"]["model"]["config"]["use_ego_status"] is False
    assert recipes["no_occ_no_ego"]["model"]["config"]["use_ego_status"] is False
    for name in ("occ_history_no_ego", "no_occ_history_no_ego"):
        assert recipes[name]["model"]["config"]["ego_history_steps"] == 4
        assert recipes[name]["model"]["config"]["use_ego_status"] is False
    inputs = ("occ_reasoning", "occ_after_text", "occ_history", "occ_no_ego", "no_occ_no_ego", "occ_history_no_ego",
              "no_occ_history_no_ego")  # fmt: skip
    for name in inputs:  # valid recipes
        assert JointRecipe.from_dict(recipes[name]).model.config == recipes[name]["model"]["config"]
    assert {name for name, variant in VARIANTS.items() if variant.train_data != "train"} == {
        "occ_10pct",
        "no_occ_10pct",
    }


def test_the_scale_recipe_builds_a_model_that_can_see_objects() -> None:
    recipe = load_recipe(REPO_ROOT / SCALE_RECIPE)
    model_section = {"config": {**recipe["model"]["config"], "occupancy_latent_shape": [16, 50, 50]}}
    model, processor, _ = build_model_and_processor(model_section)
    config = model.config
    assert config.vision_config.image_size >= 224 and config.image_seq_length >= 144
    assert config.vision_config.num_hidden_layers >= 8 and config.text_config.num_hidden_layers >= 6
    assert 30e6 <= sum(p.numel() for p in model.parameters()) <= 100e6
    assert processor.image_seq_length == config.image_seq_length
    assert recipe["training"]["full_determinism"] and recipe["training"]["torch_compile"]


# ------------------------------------------------------------------------------------------------- smoke run


@pytest.fixture(scope="module")
def smoke_run(sim_dataroot: Path, occupancy_vae_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """`prepare` on the tiny sim scenes (training) and one 8 s scene of the held-out seed (the tiny 3 s scenes have no
    hard keyframe), then `run` of `occ_10pct` (trained on `train_10pct/`) for 2 steps of a tiny model."""
    from occvla_hf.sim import SimConfig, generate_dataset
    from occvla_hf.sim.config import HELD_OUT_SEED
    from tests.conftest import SIM_VERSION, TINY_MODEL_CONFIG

    root = tmp_path_factory.mktemp("ablation_scale")
    (root / "sim").mkdir()
    (root / "sim" / "train").symlink_to(sim_dataroot, target_is_directory=True)
    held_out = SimConfig(scale=0.05, scene_duration_s=8.0, lidar_azimuth_steps=64, questions_per_keyframe=2)
    generate_dataset(
        root / "sim" / "eval", num_scenes=1, seed=HELD_OUT_SEED, version=SIM_VERSION, config=held_out, progress=False
    )
    ablation_scale.main(
        [
            "prepare",
            "--sim",
            str(root / "sim"),
            "--out",
            str(root / "data"),
            "--version",
            SIM_VERSION,
            "--train-split",
            "mini_train",
            "--validation-split",
            "mini_val",
        ]
    )
    recipe = {
        "stage": "joint",
        "model": {"config": TINY_MODEL_CONFIG},
        "data": {"source": "sim", "tasks": ["planning", "qa"], "train_split": "mini_train", "eval_split": None},
        "training": {
            "max_steps": 2,
            "per_device_train_batch_size": 2,
            "learning_rate": 1.0e-3,
            "logging_steps": 1,
            "save_strategy": "no",
            "report_to": "none",
            "use_cpu": True,
            "disable_tqdm": True,
        },
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out = root / "results"
    with pytest.MonkeyPatch.context() as patch:  # the training processes import this checkout of the package
        patch.setenv("PYTHONPATH", str(REPO_ROOT))
        ablation_scale.main(
            [
                "run",
                "--data",
                str(root / "data"),
                "--variants",
                "occ_10pct",
                "--seeds",
                "0",
                "--vae",
                str(occupancy_vae_dir),
                "--runs",
                str(root / "runs"),
                "--parallel",
                "1",
                "--recipe",
                str(root / "recipe.yaml"),
                "--latency-repeats",
                "1",
                "--out",
                str(out),
            ]
        )
    return root


@pytest.mark.slow
def test_smoke_run_writes_every_key_of_the_shipped_reports_plus_the_hard_subset(smoke_run: Path) -> None:
    shipped = json.loads(SHIPPED_REPORT.read_text())
    report: dict[str, Any] = json.loads((smoke_run / "results" / "occ_10pct_s0.json").read_text())
    assert set(report) == (set(shipped) - {"round"}) | {"planning_hard"}
    assert (report["variant"], report["seed"]) == ("occ_10pct", 0)
    for key in ("planning", "planning_with_velocity", "planning_hard"):
        # the shipped reports predate the planning report's `normalization` entry
        assert set(report[key]) == set(shipped["planning"]) | {"normalization"}, key
    assert set(report["qa"]) == set(shipped["qa"]) and set(report["latency"]) == set(shipped["latency"])
    assert set(report["occupancy"]) == set(shipped["occupancy"])
    assert 0 < report["planning_hard"]["num_samples"] < report["planning_with_velocity"]["num_samples"]
    baseline = json.loads((smoke_run / "results" / "constant_velocity.json").read_text())
    assert set(baseline) == {"variant", "planning_with_velocity", "planning_hard", "from_ego_history"}
    assert set(baseline["from_ego_history"]) == {"planning_with_velocity", "planning_hard"}  # the same subsets
    tables = scale_tables([report, baseline])
    assert tables.count("| constant velocity (ego history, last 0.5 s) |") == 2  # all and hard keyframes


@pytest.mark.slow
def test_smoke_run_prepares_the_label_scarce_validation_and_held_out_folders(smoke_run: Path) -> None:
    from occvla_hf.data.load import load_configs

    data = smoke_run / "data"
    train, scarce, validation = (load_configs(data / name) for name in ("train", "train_10pct", "val"))
    keep = labelled_scenes(train["planning"]["mini_train"]["scene_name"])
    planning = scarce["planning"]["mini_train"]
    assert set(np.asarray(planning["scene_name"])[labelled_mask(planning)]) == keep
    assert planning["sample_token"] == train["planning"]["mini_train"]["sample_token"]  # every keyframe stays
    assert len(scarce["occupancy"]["mini_train"]) == len(train["occupancy"]["mini_train"])
    assert set(validation["planning"]) == {"mini_val"} and set(load_configs(data / "eval")) == set(train)
    assert len(load_configs(data / "eval")["planning"]["mini_train"]) == 16  # the held-out scene, not the training ones


@pytest.mark.slow
def test_hard_subset_rows_and_tables(smoke_run: Path) -> None:
    from occvla_hf.experiments.occupancy_ablation import held_out_rows, read_reports

    rows = held_out_rows(smoke_run / "data", "planning")
    arrays = rows.with_format("numpy")[:]
    expected = hard_keyframes(
        arrays["trajectory"], arrays["trajectory_mask"], arrays["ego_status"], arrays["ego_status_valid"]
    )
    assert expected.any()
    assert hard_subset(rows)["sample_token"] == list(np.asarray(rows["sample_token"])[expected])
    tables = scale_tables(read_reports(sorted((smoke_run / "results").glob("*.json"))))
    assert "Planning on the hard subset, ST-P3 protocol" in tables
    assert f"Model vs constant velocity on the {int(expected.sum())} held-out keyframes of the hard subset" in tables
    assert "| with occupancy, 10 % of the labels |" in tables and "Query occupancy per class" in tables


def test_occupancy_gradient_shares_are_the_occupancy_terms_part_of_the_summed_norms() -> None:
    train_log = [
        {"loss": 1.0, "grad_norm": 3.0},  # a plain log: no per-term norms
        {"grad_norm_lm_loss": 3.0, "grad_norm_trajectory_loss": 0.5, "grad_norm_occupancy_latent_loss": 0.5,
         "grad_norm_step": 2},
        {"grad_norm_lm_loss": 1.0, "grad_norm_occupancy_latent_loss": 0.5, "grad_norm_occupancy_voxel_loss": 0.5,
         "grad_norm_step": 102},
    ]  # fmt: skip
    assert occupancy_gradient_shares(train_log) == [12.5, 50.0]
    assert occupancy_gradient_shares([{"grad_norm_lm_loss": 2.0, "grad_norm_step": 2}]) == []  # no occupancy term


def test_scale_tables_add_the_probes_and_the_gradient_share_of_the_runs_that_have_them() -> None:
    def report(variant: str, seed: int, cars: float, lead: float | None, occupancy_norm: float | None) -> dict:
        probes = {"cars_per_camera": {"vision": {"r2": cars}, "lm_image": {"r2": cars + 0.01}},
                  "lead_distance_m": None if lead is None else {"traj": {"r2": lead}}}  # fmt: skip
        norms = {"grad_norm_lm_loss": 1.0, "grad_norm_step": 2}
        if occupancy_norm is not None:
            norms["grad_norm_occupancy_latent_loss"] = occupancy_norm
        return {"variant": variant, "seed": seed, "probes": probes, "train_log": [norms]}

    runs = {"occ": [report("occ", 0, 0.5, -0.5, 1.0), report("occ", 1, 0.7, None, 3.0)],
            "no_occ": [report("no_occ", 0, 0.4, -0.6, None)]}  # fmt: skip
    probes = "\n".join(probe_table(runs, VARIANTS))
    assert "| with occupancy | 0.60 ± 0.10 | 0.61 ± 0.10 | -0.50 ± 0.00 |" in probes  # None: left out of the mean
    assert "| without occupancy | 0.40 ± 0.00 | 0.41 ± 0.00 | -0.60 ± 0.00 |" in probes
    shares = "\n".join(gradient_share_table(runs, VARIANTS))
    assert "| with occupancy | 1 | 62.50 ± 12.50 | 62.50 ± 12.50 |" in shares  # 50 % and 75 %
    assert "without occupancy" not in shares
    assert probe_table({"occ": [{"variant": "occ", "seed": 0}]}, VARIANTS) == []  # a report without probes


def _paired_report(variant: str, seed: int, l2: float, qa: float) -> dict[str, Any]:
    planning = {"stp3": {"l2_avg_m": l2, "collision_avg_pct": 0.5}, "uniad": {"l2_avg_m": 2 * l2},
                "per_step": {"longitudinal_abs_m": [l2 / 2] * 6, "lateral_abs_m": [l2] * 6}}  # fmt: skip
    return {"variant": variant, "seed": seed, "planning": planning, "planning_hard": {"stp3": {"l2_avg_m": l2 + 0.1}},
            "qa": {"overall": {"accuracy_pct": qa}}}  # fmt: skip


def test_paired_difference_table_compares_the_seeds_both_variants_ran() -> None:
    runs = {
        "occ": [_paired_report("occ", s, l2, qa) for s, l2, qa in ((0, 0.450, 70.0), (1, 0.460, 69.0), (2, 0.5, 60.0))],
        "no_occ": [_paired_report("no_occ", s, l2, qa) for s, l2, qa in ((0, 0.455, 69.0), (1, 0.470, 69.5))],
        "occ_no_ego": [_paired_report("occ_no_ego", 1, 2.0, 69.0)],  # its pair has no run: no row
    }
    table = "\n".join(paired_difference_table(runs, VARIANTS))
    # Seeds 0 and 1 only (seed 2 has no `no_occ` run): differences -0.005 and -0.010 m; QA +1.0 and -0.5.
    assert "| with occupancy - without occupancy | 0, 1 | -0.007 ± 0.004 (2/2) | -0.007 ± 0.004 (2/2) | " in table
    assert "-0.015 ± 0.007 (2/2) | -0.004 ± 0.002 (2/2) | -0.007 ± 0.004 (2/2) | +0.000 ± 0.000 (0/2) | " in table
    assert table.rstrip().endswith("| +0.250 ± 1.061 (1/2) |")
    del runs["occ"][0]["planning"]["per_step"]  # a run evaluated before the report had the per-step split
    assert "| -0.015 ± 0.007 (2/2) | - | - | +0.000 ± 0.000 (0/2) | " in "\n".join(
        paired_difference_table(runs, VARIANTS)
    )
    assert "no ego status" not in table
    assert paired_difference_table({"occ": runs["occ"]}, VARIANTS) == []


def test_paired_tables_refuse_two_runs_of_one_seed() -> None:
    # A rerun of a seed (e.g. the same variant from two blocks) must not be paired by an arbitrary choice.
    runs = {"occ": [_paired_report("occ", 1, 0.48, 62.0)],
            "no_occ": [_paired_report("no_occ", 1, 0.66, 63.0), _paired_report("no_occ", 1, 0.49, 63.5)]}  # fmt: skip
    with pytest.raises(ValueError, match=r"no_occ has more than one report of seed\(s\) \[1\]"):
        paired_difference_table(runs, VARIANTS)


def test_per_class_table_shows_a_class_absent_from_the_labels_as_a_dash() -> None:
    iou = {f"camera_iou_{name}": 0.25 for name in ablation_scale.OCCUPIED_CLASSES}
    iou["camera_iou_others"] = float("nan")  # no voxel of the class, predicted or true
    lines = per_class_iou_table({"occ": [{"variant": "occ", "seed": 0, "occupancy": iou}]}, VARIANTS)
    row = next(line for line in lines if line.startswith("| with occupancy |"))
    assert row.split(" | ")[1] == "-" and row.count("25.00 ± 0.00") == len(ablation_scale.OCCUPIED_CLASSES) - 1
    assert "nan" not in "\n".join(lines)


def test_paired_meta_action_table_splits_the_difference_by_the_logged_meta_action() -> None:
    def report(variant: str, seed: int, cruise: float, brake: float) -> dict[str, Any]:
        groups = {"keep, straight": (10, cruise), "stop, straight": (4, brake)}
        by_action = {name: {"num_samples": n, "stp3": {"l2_avg_m": l2}} for name, (n, l2) in groups.items()}
        return {"variant": variant, "seed": seed, "planning": {"by_meta_action": by_action}}

    runs = {"occ": [report("occ", 0, 0.19, 0.31), report("occ", 1, 0.20, 0.27)],
            "no_occ": [report("no_occ", 0, 0.20, 0.28), report("no_occ", 1, 0.22, 0.28)],
            "occ_no_ego": [report("occ_no_ego", 0, 1.0, 1.0)], "no_occ_no_ego": [report("no_occ_no_ego", 0, 1.0, 1.0)]}  # fmt: skip
    table = "\n".join(paired_meta_action_table(runs, VARIANTS))
    assert "| keep, straight | 10 | 0.210 | -0.015 ± 0.007 (2/2) |" in table  # -0.01 and -0.02
    assert "| stop, straight | 4 | 0.280 | +0.010 ± 0.028 (1/2) |" in table  # +0.03 and -0.01
    assert "no ego status" not in table  # one common seed: no spread, no table
