"""Linear probes: what a trained model's states hold about the scene, for comparing runs of an ablation.

Two targets, both computed exactly from a planning row's annotations at the current keyframe:
- `lead_distance_m`: the distance to the lead vehicle, the nearest `vehicle.*` box whose centre lies ahead of the ego
  (x > 0) within `LEAD_LANE_HALF_WIDTH_M` of its path (|y|) and `PROBE_RANGE_M`; keyframes without one are left out.
- `cars_per_camera`: per camera, the `vehicle.car` boxes within `PROBE_RANGE_M` whose centre projects into that
  camera's image (`camera_to_keyframe_ego`, `camera_intrinsics`).

Three feature sets of the model (`probe_features`), read on the planning prompt at inference:
- `traj`: the final LM state of the `<traj>` token (what the trajectory head reads), probed for the lead distance;
- `vision`: the projector's output (the image tokens the LM receives), mean over each view's tokens;
- `lm_image`: the final LM states of the image tokens, mean over each view's tokens; both probed for cars per camera.

A probe is ridge regression on standardised features (`ridge_probe`), its penalty chosen by cross-validation on the
fitting keyframes; it is scored by R^2 on keyframes of other scenes (`probe_report` splits by scene), so that a
probe cannot recognise a scene instead of reading its content.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from occvla_hf.class_labels import label_names
from occvla_hf.constants import CAMERA_NAMES
from occvla_hf.data.schema import agent_boxes_arrays
from occvla_hf.evaluation.runner import model_inputs, prepared_batches
from occvla_hf.training.image_cache import ImageCache

LEAD_LANE_HALF_WIDTH_M: float = 1.8
PROBE_RANGE_M: float = 50.0
# Boxes whose centre is closer than this in front of a camera are not counted (behind or at its plane).
MIN_CAMERA_DEPTH_M: float = 0.5
RIDGE_ALPHAS: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
CV_FOLDS: int = 5
MIN_PROBE_SAMPLES: int = 2
# Share of the scenes (in sorted scene-name order) whose keyframes fit the probes; the rest score them.
FIT_SCENE_FRACTION: float = 0.75


def lead_distance_m(row: Mapping[str, Any]) -> float | None:
    """Distance (m) along x to the lead vehicle at the current keyframe, None without one (module docstring)."""
    boxes = agent_boxes_arrays(row["agent_boxes"])[0]
    categories = label_names("agent_categories", row["agent_categories"][0])
    x, y = boxes[:, 0], boxes[:, 1]
    vehicle = np.array([c.startswith("vehicle.") for c in categories], dtype=bool)
    ahead = vehicle & (x > 0) & (np.abs(y) < LEAD_LANE_HALF_WIDTH_M) & (x <= PROBE_RANGE_M)
    return float(x[ahead].min()) if ahead.any() else None


def cars_per_camera(row: Mapping[str, Any]) -> np.ndarray:
    """(num_cameras,) int: the `vehicle.car` boxes within range whose centre projects into each camera's image."""
    boxes = agent_boxes_arrays(row["agent_boxes"])[0]
    cars = np.array(
        [c == "vehicle.car" for c in label_names("agent_categories", row["agent_categories"][0])], dtype=bool
    )
    centres = boxes[cars & (np.hypot(boxes[:, 0], boxes[:, 1]) <= PROBE_RANGE_M), :3].astype(np.float64)
    intrinsics = np.asarray(row["camera_intrinsics"], dtype=np.float64)  # (V, 3, 3)
    to_ego = np.asarray(row["camera_to_keyframe_ego"], dtype=np.float64)  # (V, 4, 4) camera -> ego
    counts = np.zeros(len(to_ego), dtype=np.int64)
    for view, (k, camera_to_ego) in enumerate(zip(intrinsics, to_ego, strict=True)):
        rotation, translation = camera_to_ego[:3, :3], camera_to_ego[:3, 3]
        in_camera = (centres - translation) @ rotation  # (N, 3): R^T (p - t) for each row vector p
        depth = in_camera[:, 2]
        front = depth > MIN_CAMERA_DEPTH_M
        pixels = in_camera[front] @ k.T
        u, v = pixels[:, 0] / pixels[:, 2], pixels[:, 1] / pixels[:, 2]
        width, height = 2.0 * k[0, 2], 2.0 * k[1, 2]
        counts[view] = int(((u >= 0) & (u < width) & (v >= 0) & (v < height)).sum())
    return counts


@torch.inference_mode()
def probe_features(
    model, processor, rows: Dataset, batch_size: int = 32, num_workers: int = 0, images: ImageCache | None = None
) -> dict[str, np.ndarray]:
    """The feature sets of the module docstring on the planning rows, float32 arrays: `traj` (N, D), `vision`
    (N, V, D) and `lm_image` (N, V, D). Without `traj` for `trajectory_position="after_text"`, whose prompt has no
    `<traj>` (its state exists only after the generated text). `num_workers` loader processes prepare the batches, from
    the cached views `images` when given (`evaluation.runner.prepared_batches`)."""
    config = model.config
    views, per_view = config.num_views, config.image_seq_length
    in_prompt = config.trajectory_position != "after_text"
    parts: dict[str, list[np.ndarray]] = (
        {"traj": [], "vision": [], "lm_image": []}
        if in_prompt
        else {
            "vision": [],
            "lm_image": [],
        }
    )
    prepare = partial(processor.from_rows, task="planning", training=False)
    for _, prepared in prepared_batches(
        rows, batch_size, prepare, num_workers=num_workers, description="probes", images=images
    ):
        inputs = model_inputs(prepared, model)
        input_ids = inputs["input_ids"]
        batch = len(input_ids)
        outputs = model.model(
            input_ids=input_ids,
            pixel_values=inputs["pixel_values"],
            attention_mask=inputs["attention_mask"],
            token_type_ids=inputs.get("token_type_ids"),
            output_hidden_states=[0],  # the LM's input: the projector output at the image tokens
        )
        hidden = outputs.last_hidden_state  # (batch, length, D)
        is_image = input_ids == config.image_token_id
        image = hidden[is_image].reshape(batch, views, per_view, -1)
        vision = outputs.hidden_states[0][is_image].reshape(batch, views, per_view, -1)
        if in_prompt:
            parts["traj"].append(hidden[input_ids == config.traj_token_id].float().cpu().numpy())
        parts["lm_image"].append(image.float().mean(dim=2).cpu().numpy())
        parts["vision"].append(vision.float().mean(dim=2).cpu().numpy())
    return {name: np.concatenate(arrays) for name, arrays in parts.items()}


def _ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Weights and intercept of ridge regression on (already standardised) `x`."""
    mean = y.mean()
    gram = x.T @ x + alpha * np.eye(x.shape[1])
    return np.linalg.solve(gram, x.T @ (y - mean)), float(mean)


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    total = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / total if total > 0 else float("nan")


def ridge_probe(
    x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, groups: np.ndarray
) -> dict[str, float]:
    """Ridge probe: penalty chosen by `CV_FOLDS`-fold cross-validation over `groups` (scenes) of the fitting
    samples (over samples when there is one group), refit on all of them, R^2 and RMSE on the test samples."""
    x_fit, x_test = np.asarray(x_fit, np.float64), np.asarray(x_test, np.float64)
    y_fit, y_test = np.asarray(y_fit, np.float64), np.asarray(y_test, np.float64)
    if x_fit.ndim != 2 or x_test.ndim != 2 or len(x_fit) != len(y_fit) or len(x_test) != len(y_test):
        raise ValueError(f"x/y: expected (N, D) features and (N,) targets, got {x_fit.shape}, {y_fit.shape}")
    if min(len(y_fit), len(y_test)) < MIN_PROBE_SAMPLES:
        raise ValueError(
            f"y: expected >= {MIN_PROBE_SAMPLES} fitting and test samples, got {len(y_fit)}, {len(y_test)}"
        )
    mean, std = x_fit.mean(0), x_fit.std(0) + 1e-6
    x_fit, x_test = (x_fit - mean) / std, (x_test - mean) / std
    unique = np.unique(groups)
    if len(unique) >= 2:  # folds of whole groups; with a single group, folds of samples
        fold_of_group = {group: i % CV_FOLDS for i, group in enumerate(unique)}
        folds = np.array([fold_of_group[g] for g in groups])
    else:
        folds = np.arange(len(y_fit)) % CV_FOLDS
    scores = {}
    for alpha in RIDGE_ALPHAS:
        errors = []
        for fold in np.unique(folds):
            train, held = folds != fold, folds == fold
            weights, bias = _ridge_fit(x_fit[train], y_fit[train], alpha)
            errors.append(((x_fit[held] @ weights + bias - y_fit[held]) ** 2).sum())
        scores[alpha] = float(np.sum(errors))
    alpha = min(scores, key=scores.get)
    weights, bias = _ridge_fit(x_fit, y_fit, alpha)
    pred = x_test @ weights + bias
    return {
        "r2": _r2(y_test, pred),
        "rmse": float(np.sqrt(((pred - y_test) ** 2).mean())),
        "target_std": float(y_test.std()),
        "alpha": alpha,
        "num_fit": len(y_fit),
        "num_test": len(y_test),
    }


def fit_scene_mask(scene_names: Sequence[str]) -> np.ndarray:
    """(N,) bool: keyframes of the first `FIT_SCENE_FRACTION` of the scenes (sorted by name) fit; the rest test."""
    scenes = sorted(set(scene_names))
    if len(scenes) < 2:
        raise ValueError(f"scene_names: probes need keyframes of at least 2 scenes, got {len(scenes)}")
    fit = set(scenes[: min(len(scenes) - 1, max(1, round(FIT_SCENE_FRACTION * len(scenes))))])
    return np.array([name in fit for name in scene_names], dtype=bool)


def probe_report(
    model, processor, rows: Dataset, batch_size: int = 32, num_workers: int = 0, images: ImageCache | None = None
) -> dict[str, Any]:
    """The probes of the module docstring on planning rows: {target: {features: ridge_probe report}}; the lead
    distance probe is None when fewer than `MIN_PROBE_SAMPLES` fitting or test keyframes have a lead vehicle, or for
    an `after_text` model. `images`: the rows' cached views (`probe_features`)."""
    features = probe_features(model, processor, rows, batch_size=batch_size, num_workers=num_workers, images=images)
    columns = rows.select_columns(
        ["scene_name", "agent_boxes", "agent_categories", "camera_intrinsics", "camera_to_keyframe_ego"]
    )
    table = columns.to_list()
    scenes = np.array([row["scene_name"] for row in table])
    fit = fit_scene_mask(list(scenes))
    lead = np.array([np.nan if (d := lead_distance_m(row)) is None else d for row in table])
    has_lead = ~np.isnan(lead)
    report: dict[str, Any] = {"num_keyframes": len(table), "num_with_lead": int(has_lead.sum())}
    f, t = fit & has_lead, ~fit & has_lead
    # None: too few keyframes with a lead vehicle, or no `<traj>` state in the prompt (`probe_features`)
    enough = min(f.sum(), t.sum()) >= MIN_PROBE_SAMPLES and "traj" in features
    report["lead_distance_m"] = {
        "traj": ridge_probe(features["traj"][f], lead[f], features["traj"][t], lead[t], scenes[f]) if enough else None
    }
    counts = np.stack([cars_per_camera(row) for row in table])  # (N, V)
    views = len(CAMERA_NAMES)
    flat_fit, flat_scenes = np.repeat(fit, views), np.repeat(scenes, views)
    report["cars_per_camera"] = {}
    for name in ("vision", "lm_image"):
        x = features[name].reshape(len(table) * views, -1)  # (N * V, D)
        y = counts.reshape(-1).astype(np.float64)
        report["cars_per_camera"][name] = ridge_probe(
            x[flat_fit], y[flat_fit], x[~flat_fit], y[~flat_fit], flat_scenes[flat_fit]
        )
    return report


__all__ = ["cars_per_camera", "lead_distance_m", "probe_features", "probe_report", "ridge_probe"]
