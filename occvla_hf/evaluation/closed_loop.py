"""Closed-loop evaluation: planners drive the ego through the sim's scenarios; PDMS and driving scores per run.

A planner is anything with a `name`, a `needs_images` flag and `plan(observations) -> (B, 6, 2)` waypoints (metres,
ego frame, one every 0.5 s) for a batch of `Observation`s: the six camera images rendered at the ego's actual pose
(as the dataset's JPEGs decode), the ego status computed from the ego's actual past poses as the planning datasets
compute it (`data.geometry.ego_kinematics` on the poses 1 s, 0.5 s and 0 s ago; no steering: the sim has no CAN bus),
the route command at the next junction and the prompt (None: the processor's planning template). Adapters:
`OccVLAPlanner` (an `OccVLAForPlanning` and its processor), `ConstantVelocityPlanner` and `ExpertPlanner` (the sim's
behaviour model driving the ego with privileged access to the world: the upper bound).

`run_closed_loop` steps up to `batch_size` scenarios in lockstep, one batched planner call per tick, and scores each
run against the expert's run of the same scenario in the same agent mode (the progress reference and the route's
end). A planner that raises, or returns anything but finite (6, 2) waypoints for a scenario, fails that scenario (its
reason is kept) and the others go on; failed scenarios score 0 in every mean (`closed_loop_metrics.summarize`).
`closed_loop_report` is JSON-ready and a pure function of the planner, the scenarios and the settings (no clock, no
paths): the same seed gives a byte-identical report. `open_loop_l2` scores the same planner open loop on the same
scenarios. `write_episode_gif` draws a run: the front camera next to a bird's-eye view with the agents, the planned
(orange) and driven (blue) paths and the infractions (red). The definitions: docs/closed_loop.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from occvla_hf.constants import (
    CAMERA_NAMES,
    EGO_STATUS_FEATURES,
    NUM_OCC_CLASSES,
    NUM_PAST_WAYPOINTS,
    NUM_WAYPOINTS,
    WAYPOINT_STEP_S,
)
from occvla_hf.data.geometry import ego_kinematics, pose_matrix
from occvla_hf.evaluation.baselines import constant_velocity_trajectories
from occvla_hf.evaluation.closed_loop_metrics import (
    INFRACTION_PENALTIES,
    METRIC_STEP_S,
    EpisodeMetrics,
    ego_corners,
    score_episode,
    summarize,
)
from occvla_hf.evaluation.planning import REPORT_HORIZONS_S, horizon_values, l2_errors
from occvla_hf.geometry import yaw_to_quaternion
from occvla_hf.sim.closed_loop import (
    SCENARIO_TYPES,
    ClosedLoopWorld,
    EpisodeRecord,
    LoopConfig,
    Scenario,
    ScenarioScene,
    build_scenario,
)
from occvla_hf.sim.config import SimConfig
from occvla_hf.sim.geometry import world_to_frame_2d
from occvla_hf.sim.layout import DRIVEABLE, OTHER_FLAT, SIDEWALK, TERRAIN

# Images at 160 x 90 px (the scale the embedded model was trained at) and the default 0.25 s simulation step.
DEFAULT_SIM_CONFIG = SimConfig(scale=0.1)
# Ego status from the poses at these lags (s): the keyframe spacing of the planning datasets.
EGO_STATUS_LAGS_S: tuple[float, ...] = (2 * WAYPOINT_STEP_S, WAYPOINT_STEP_S, 0.0)
_STEERING = EGO_STATUS_FEATURES.index("steering")


@dataclass(frozen=True)
class Observation:
    """What a planner sees at a planning tick.

    Args:
        scenario: name of the scenario.
        time_s: simulation time.
        images: six (H, W, 3) uint8 images in CAMERA_NAMES order, or None for planners that need none.
        ego_status: (6,) raw ego status in EGO_STATUS_FEATURES order; `ego_status_valid` (6,) bool flags it.
        past_trajectory: (4, 2) the ego's actual positions 2.0, 1.5, 1.0 and 0.5 s ago in its current frame, metres
            (the rows' `past_trajectory`); `past_trajectory_mask` (4,) False before the scene start.
        command: the route at the next junction: "straight", "left" or "right".
        prompt: the planning prompt (None: the processor's template).
        world: the running world (privileged ground truth: only `ExpertPlanner` reads it).
    """

    scenario: str
    time_s: float
    images: tuple[np.ndarray, ...] | None
    ego_status: np.ndarray
    ego_status_valid: np.ndarray
    past_trajectory: np.ndarray
    past_trajectory_mask: np.ndarray
    command: str
    prompt: str | None
    world: ClosedLoopWorld


class Planner(Protocol):
    """Maps a batch of observations to (B, 6, 2) waypoints, metres, ego frame (x forward, y left)."""

    name: str
    needs_images: bool

    def plan(self, observations: Sequence[Observation]) -> np.ndarray: ...


def ego_status(world: ClosedLoopWorld) -> tuple[np.ndarray, np.ndarray]:
    """(6,) raw ego status and (6,) validity at the world's current time, from the ego's actual past poses."""
    times_s = np.array([world.time_s - lag for lag in EGO_STATUS_LAGS_S])
    times_s = times_s[times_s > -1e-9]
    xy, yaw = world.ego_poses(times_s)
    poses = np.stack([pose_matrix([x, y, 0.0], yaw_to_quaternion(float(h))) for (x, y), h in zip(xy, yaw)])
    values, valid = ego_kinematics(poses, np.round(times_s * 1e6).astype(np.int64))
    status = np.zeros(len(EGO_STATUS_FEATURES))
    status_valid = np.zeros(len(EGO_STATUS_FEATURES), dtype=bool)
    status[:_STEERING], status_valid[:_STEERING] = values, valid
    return status, status_valid


def past_trajectory(world: ClosedLoopWorld) -> tuple[np.ndarray, np.ndarray]:
    """(4, 2) ego positions at the previous 4 keyframe times (oldest first) in the current ego frame, metres, and
    (4,) validity (False before the scene start), as the planning rows' `past_trajectory`."""
    times_s = world.time_s - WAYPOINT_STEP_S * np.arange(NUM_PAST_WAYPOINTS, 0, -1)
    valid = times_s > -1e-9
    points = np.zeros((NUM_PAST_WAYPOINTS, 2))
    if valid.any():
        (origin,), (yaw,) = world.ego_poses(np.array([world.time_s]))
        past_xy, _ = world.ego_poses(times_s[valid])
        points[valid] = world_to_frame_2d(past_xy, origin, float(yaw))
    return points, valid


def observe(world: ClosedLoopWorld, with_images: bool, prompt: str | None = None) -> Observation:
    """The observation of a running world."""
    status, valid = ego_status(world)
    past, past_valid = past_trajectory(world)
    return Observation(
        scenario=world.scene.scenario.name,
        time_s=world.time_s,
        images=tuple(world.render()) if with_images else None,
        ego_status=status,
        ego_status_valid=valid,
        past_trajectory=past,
        past_trajectory_mask=past_valid,
        command=world.scene.command,
        prompt=prompt,
        world=world,
    )


# ---------------------------------------------------------------------------------------------------- planners


class ExpertPlanner:
    """The sim's behaviour model driving the ego (privileged: it sees every agent and the signals)."""

    name = "expert"
    needs_images = False

    def plan(self, observations: Sequence[Observation]) -> np.ndarray:
        return np.stack([obs.world.expert_plan() for obs in observations])


class ConstantVelocityPlanner:
    """Keeps the ego's current velocity (the ego status' vx, vy) for 3 s."""

    name = "constant-velocity"
    needs_images = False

    def plan(self, observations: Sequence[Observation]) -> np.ndarray:
        return constant_velocity_trajectories(np.stack([obs.ego_status for obs in observations]))


class OccVLAPlanner:
    """An `OccVLAForPlanning` and its `OccVLAProcessor`: images + ego status (+ ego history, for a processor with
    `ego_history_steps`) + prompt -> `model.plan` trajectory."""

    needs_images = True

    def __init__(self, model: Any, processor: Any, name: str = "occvla") -> None:
        self.model, self.processor, self.name = model, processor, name

    def plan(self, observations: Sequence[Observation]) -> np.ndarray:
        import torch

        from occvla_hf.evaluation.runner import model_inputs

        prompts = [obs.prompt for obs in observations]
        if all(prompt is None for prompt in prompts):
            text = None
        else:  # the template where an observation brings none
            text = [self.processor.planning_prompt if prompt is None else prompt for prompt in prompts]
        inputs = self.processor(
            images=[dict(zip(CAMERA_NAMES, obs.images)) for obs in observations],
            text=text,
            task="planning",
            ego_status=np.stack([obs.ego_status for obs in observations]),
            ego_status_valid=np.stack([obs.ego_status_valid for obs in observations]),
            ego_history=np.stack([obs.past_trajectory for obs in observations]),
            ego_history_mask=np.stack([obs.past_trajectory_mask for obs in observations]),
        )
        with torch.inference_mode():
            plan = self.model.plan(**model_inputs(inputs, self.model))
        return plan.trajectory.float().cpu().numpy()


PLANNER_NAMES: tuple[str, ...] = ("model", "constant-velocity", "expert")


# ------------------------------------------------------------------------------------------------------ runs


@dataclass
class ScenarioResult:
    """One run: "completed" (its metrics) or "failed" (the planner's fault, with the reason). Its ground truth, the
    expert's reference run and the front-camera frames (for the video) stay out of the report."""

    scenario: Scenario
    status: str
    failure: str | None
    ticks: int
    record: EpisodeRecord
    reference: EpisodeRecord | None
    metrics: EpisodeMetrics | None
    front_frames: list[np.ndarray] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "type": self.scenario.scenario_type,
            "index": self.scenario.index,
            "status": self.status,
            "failure": self.failure,
            "ticks": self.ticks,
            "termination": "planner failure" if self.failure is not None else self.record.termination,
            "metrics": None if self.metrics is None else self.metrics.to_dict(),
        }


def check_plan(plan: Any) -> np.ndarray:
    """A planner's waypoints for one scenario as a finite (6, 2) float64 array; ValueError saying what is wrong."""
    array = np.asarray(plan, dtype=np.float64)
    if array.shape != (NUM_WAYPOINTS, 2):
        raise ValueError(f"planner output: expected ({NUM_WAYPOINTS}, 2) waypoints, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("planner output: NaN or inf waypoints")
    return array


def _plans(planner: Planner, observations: list[Observation]) -> list[np.ndarray | str]:
    """Per observation: checked waypoints, or the reason they could not be had. A failing batch is retried one
    observation at a time, so that the failure lands on its scenario."""
    try:
        output = planner.plan(observations)
        if len(output) != len(observations):
            raise ValueError(f"planner output: expected {len(observations)} plans, got {len(output)}")
        return [check_plan(plan) for plan in output]
    except Exception as error:  # noqa: BLE001 - a planner may fail in any way; the other scenarios go on
        if len(observations) == 1:
            return [f"{type(error).__name__}: {error}"]
    return [_plans(planner, [obs])[0] for obs in observations]


@dataclass
class _Run:
    world: ClosedLoopWorld
    failure: str | None = None
    ticks: int = 0
    frames: list[np.ndarray] = field(default_factory=list)


def _drive(
    planner: Planner, scenes: Sequence[ScenarioScene], reactive: bool, loop_config: LoopConfig | None, keep_frames: bool
) -> list[_Run]:
    """Run the scenes in lockstep, one planner call per tick for all running ones."""
    runs = [_Run(ClosedLoopWorld(scene, reactive, loop_config)) for scene in scenes]
    while running := [run for run in runs if not run.world.done and run.failure is None]:
        observations = [observe(run.world, planner.needs_images) for run in running]
        if keep_frames:
            for run, obs in zip(running, observations):
                images = obs.images if obs.images is not None else run.world.render(("CAM_FRONT",))
                run.frames.append(images[0])
        for run, plan in zip(running, _plans(planner, observations)):
            if isinstance(plan, str):
                run.failure = plan
            else:
                run.world.drive(plan)
                run.ticks += 1
    return runs


def run_closed_loop(
    planner: Planner,
    scenarios: Sequence[Scenario],
    *,
    reactive: bool = True,
    sim_config: SimConfig = DEFAULT_SIM_CONFIG,
    loop_config: LoopConfig | None = None,
    batch_size: int = 1,
    keep_frames: bool = False,
    progress: bool = True,
) -> list[ScenarioResult]:
    """Drive every scenario with `planner` and score it against the expert's run of the same scenario.

    Args:
        planner: see `Planner`.
        scenarios: the scenarios to run (`occvla_hf.sim.closed_loop.standard_scenarios()`).
        reactive: agents answer the ego (True) or replay the behaviour model's log (False, as NAVSIM).
        sim_config: image scale, JPEG quality and simulation step of the worlds.
        loop_config: planning rate, controller step and actuator limits.
        batch_size: scenarios advancing in lockstep, one planner call per tick for all of them.
        keep_frames: keep each tick's front-camera image (for `write_episode_gif`).
        progress: show a progress bar over scenarios.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    results: list[ScenarioResult] = []
    expert = ExpertPlanner()
    bar = tqdm(total=len(scenarios), desc=f"closed loop ({planner.name})", unit="scenario", disable=not progress)
    for start in range(0, len(scenarios), batch_size):
        chunk = scenarios[start : start + batch_size]
        scenes = [build_scenario(scenario, sim_config) for scenario in chunk]
        runs = _drive(planner, scenes, reactive, loop_config, keep_frames)
        scored = [i for i, run in enumerate(runs) if run.failure is None]  # failed runs have no scores
        if isinstance(planner, ExpertPlanner):
            references = {i: runs[i] for i in scored}
        else:  # the expert's runs of the same scenarios
            expert_runs = _drive(expert, [scenes[i] for i in scored], reactive, loop_config, keep_frames=False)
            references = dict(zip(scored, expert_runs))
        for i, (scenario, run) in enumerate(zip(chunk, runs)):
            record = run.world.record()
            reference = references[i].world.record() if i in references else None
            metrics = None if reference is None else score_episode(record, reference)
            status = "failed" if run.failure is not None else "completed"
            results.append(
                ScenarioResult(scenario, status, run.failure, run.ticks, record, reference, metrics, run.frames)
            )
            bar.update()
    bar.close()
    return results


def open_loop_l2(
    planner: Planner,
    scenarios: Sequence[Scenario],
    *,
    sim_config: SimConfig = DEFAULT_SIM_CONFIG,
    loop_config: LoopConfig | None = None,
    progress: bool = True,
) -> dict[str, float | int]:
    """Open-loop L2 (m) on the same scenarios: the expert drives each one (non-reactive agents) and at every
    planning tick with a full 3 s future left the planner plans from the expert's observation without driving; its
    waypoints are compared with where the expert's ego then is (L2 per waypoint, read at 1, 2, 3 s as UniAD does,
    "avg" their mean). Ticks whose plan fails (`check_plan`) are counted and left out."""
    expert = ExpertPlanner()
    errors: list[np.ndarray] = []
    failed = 0
    for scenario in tqdm(scenarios, desc=f"open loop ({planner.name})", unit="scenario", disable=not progress):
        world = ClosedLoopWorld(build_scenario(scenario, sim_config), reactive=False, config=loop_config)
        ticks: list[tuple[float, np.ndarray, float, np.ndarray | str]] = []
        while not world.done:
            obs = observe(world, planner.needs_images)
            expert_plan = expert.plan([obs])[0]
            plan = expert_plan if isinstance(planner, ExpertPlanner) else _plans(planner, [obs])[0]
            ticks.append((world.time_s, world.ego.xy, world.ego.yaw, plan))
            world.drive(expert_plan)
        record = world.record()
        for time_s, xy, yaw, plan in ticks:
            future_s = time_s + WAYPOINT_STEP_S * np.arange(1, NUM_WAYPOINTS + 1)
            if future_s[-1] > record.ego_times_s[-1] + 1e-9:
                continue
            if isinstance(plan, str):
                failed += 1
                continue
            rows = np.searchsorted(record.ego_times_s, future_s - 1e-9)
            truth = world_to_frame_2d(record.ego_states[rows, :2], xy, yaw)
            errors.append(l2_errors(plan, truth))
    per_step = np.mean(errors, axis=0) if errors else np.full(NUM_WAYPOINTS, np.nan)
    values = horizon_values(per_step, "uniad")
    out: dict[str, float | int] = {f"l2_{h:g}s": v for h, v in zip(REPORT_HORIZONS_S, values)}
    out["l2_avg"] = float(np.mean(values))
    out["num_ticks"] = len(errors)
    out["num_failed_ticks"] = failed
    return out


def closed_loop_report(
    results: Sequence[ScenarioResult],
    *,
    planner: str,
    reactive: bool,
    seed: int,
    scenarios: str,
    sim_config: SimConfig = DEFAULT_SIM_CONFIG,
    loop_config: LoopConfig | None = None,
    open_loop: Mapping[str, float | int] | None = None,
) -> dict[str, Any]:
    """The JSON-ready report of a set of runs (floats rounded to 6 digits; the same shape for every planner), with
    the planner's `open_loop_l2` on the same scenarios when given."""
    loop_config = loop_config or LoopConfig()
    by_type: dict[str, list[ScenarioResult]] = {}
    for result in results:
        by_type.setdefault(result.scenario.scenario_type, []).append(result)
    report = {
        "planner": planner,
        "agents": "reactive" if reactive else "non-reactive",
        "seed": seed,
        "scenarios": scenarios,
        "sim": {
            "image_size_px": list(sim_config.image_size_px),
            "sim_step_s": sim_config.sim_step_s,
            "planning_interval_s": loop_config.planning_interval_s,
            "control_step_s": loop_config.control_step_s,
        },
        "summary": summarize([r.metrics for r in results]),
        "open_loop_l2": None if open_loop is None else dict(open_loop),
        "by_type": {t: summarize([r.metrics for r in by_type[t]]) for t in SCENARIO_TYPES if t in by_type},
        "results": [r.to_dict() for r in results],
    }
    return _rounded(report)


def evaluate_closed_loop(
    planner: Planner,
    scenarios: Sequence[Scenario],
    *,
    reactive: bool = True,
    seed: int = 0,
    scenario_filter: str = "all",
    out_dir: str | Path,
    videos: bool = True,
    sim_config: SimConfig = DEFAULT_SIM_CONFIG,
    loop_config: LoopConfig | None = None,
    batch_size: int = 1,
    with_open_loop: bool = False,
    progress: bool = True,
) -> tuple[dict[str, Any], str, Path]:
    """`run_closed_loop` (and `open_loop_l2` with `with_open_loop`), then write
    `out_dir/closed_loop_<planner>_<agents>.json` (the report) and, with `videos`,
    `out_dir/videos/<planner>_<agents>/<scenario>.gif`. Returns the report, its table and the report's path."""
    results = run_closed_loop(
        planner,
        scenarios,
        reactive=reactive,
        sim_config=sim_config,
        loop_config=loop_config,
        batch_size=batch_size,
        keep_frames=videos,
        progress=progress,
    )
    open_loop = None
    if with_open_loop:
        open_loop = open_loop_l2(planner, scenarios, sim_config=sim_config, loop_config=loop_config, progress=progress)
    report = closed_loop_report(
        results,
        planner=planner.name,
        reactive=reactive,
        seed=seed,
        scenarios=scenario_filter,
        sim_config=sim_config,
        loop_config=loop_config,
        open_loop=open_loop,
    )
    out = Path(out_dir)
    stem = f"{planner.name}_{report['agents']}"
    if videos:
        for result in results:
            write_episode_gif(result, out / "videos" / stem / f"{result.scenario.name}.gif", planner.name)
    path = out / f"closed_loop_{stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return report, format_closed_loop_table(report), path


def _rounded(value: Any, digits: int = 6) -> Any:
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, Mapping):
        return {key: _rounded(item, digits) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(item, digits) for item in value]
    return value


_TABLE_COLUMNS: tuple[tuple[str, str, Callable[[Mapping[str, Any]], str]], ...] = (
    ("n", "{:>3}", lambda s: str(s["num_scenarios"])),
    ("PDMS", "{:>6}", lambda s: f"{s['pdms']:.3f}"),
    ("NC", "{:>5}", lambda s: f"{s['nc']:.2f}"),
    ("DAC", "{:>5}", lambda s: f"{s['dac']:.2f}"),
    ("TTC", "{:>5}", lambda s: f"{s['ttc']:.2f}"),
    ("EP", "{:>5}", lambda s: f"{s['ep']:.2f}"),
    ("C", "{:>5}", lambda s: f"{s['comfort']:.2f}"),
    ("DS", "{:>6}", lambda s: f"{s['driving_score']:.3f}"),
    ("RC", "{:>5}", lambda s: f"{s['route_completion']:.2f}"),
    ("SR%", "{:>5}", lambda s: f"{100 * s['success_rate']:.0f}"),
    ("coll", "{:>4}", lambda s: str(sum(v for k, v in s["infractions"].items() if k.startswith("collision")))),
    ("red", "{:>3}", lambda s: str(s["infractions"]["red_light"])),
    ("dev", "{:>3}", lambda s: str(s["route_deviations"])),
    ("fail", "{:>4}", lambda s: str(s["num_failed"])),
)


def format_closed_loop_table(report: Mapping[str, Any]) -> str:
    """One row per scenario type and one for all of them."""
    rows = [*report["by_type"].items(), ("all", report["summary"])]
    width = max(len(name) for name, _ in rows)
    header = f"{'type':<{width}}  " + "  ".join(fmt.format(name) for name, fmt, _ in _TABLE_COLUMNS)
    lines = [f"{report['planner']} ({report['agents']} agents, seed {report['seed']})", header, "-" * len(header)]
    for name, summary in rows:
        lines.append(f"{name:<{width}}  " + "  ".join(fmt.format(cell(summary)) for _, fmt, cell in _TABLE_COLUMNS))
    if report["open_loop_l2"] is not None:
        l2 = report["open_loop_l2"]
        lines.append(
            f"open-loop L2 on the same scenarios (m): 1s {l2['l2_1s']:.2f}  2s {l2['l2_2s']:.2f}  3s {l2['l2_3s']:.2f}"
            f"  avg {l2['l2_avg']:.2f}  ({l2['num_ticks']} ticks)"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------- video

_BEV_SIZE_PX = 320
_BEV_M_PER_PX = 0.2
_KIND_COLORS = {
    "vehicle": (35, 75, 205),
    "cycle": (25, 190, 200),
    "pedestrian": (215, 35, 35),
    "object": (255, 140, 0),
}
_GROUND_COLORS = np.full((NUM_OCC_CLASSES, 3), 235, dtype=np.uint8)
_GROUND_COLORS[[DRIVEABLE, SIDEWALK, TERRAIN, OTHER_FLAT]] = [
    (150, 150, 155),
    (200, 198, 190),
    (190, 215, 170),
    (210, 200, 180),
]


def _bev_frame(record: EpisodeRecord, tick: int, metrics: EpisodeMetrics | None, title: str) -> Image.Image:
    """The bird's-eye view of tick `tick` (its plan, if it got one): ego-centred, heading up, 64 m across."""
    plan_time, plan = record.plans[tick] if tick < len(record.plans) else (float(record.ego_times_s[-1]), None)
    state = record.ego_states[np.searchsorted(record.ego_times_s, plan_time - 1e-9)]
    ego_xy, ego_yaw = state[:2], float(state[2])
    half = _BEV_SIZE_PX * _BEV_M_PER_PX / 2.0
    offsets = (np.arange(_BEV_SIZE_PX) + 0.5) * _BEV_M_PER_PX - half
    forward, left = np.meshgrid(-offsets + half * 0.4, -offsets, indexing="ij")  # rows: forward, top = ahead
    c, s = math.cos(ego_yaw), math.sin(ego_yaw)
    world_xy = np.stack([ego_xy[0] + c * forward - s * left, ego_xy[1] + s * forward + c * left], axis=-1)
    classes, _ = record.world.ground.lookup(world_xy)
    image = Image.fromarray(_GROUND_COLORS[classes])
    draw = ImageDraw.Draw(image)

    def to_px(points: np.ndarray) -> list[tuple[float, float]]:
        local = world_to_frame_2d(np.asarray(points, dtype=np.float64), ego_xy, ego_yaw).reshape(-1, 2)
        rows = (half * 1.4 - local[:, 0]) / _BEV_M_PER_PX
        cols = (half - local[:, 1]) / _BEV_M_PER_PX
        return [(float(x), float(y)) for x, y in zip(cols, rows)]

    step = min(int(np.searchsorted(record.agent_times_s, plan_time - 1e-9)), len(record.agent_times_s) - 1)
    collided = set()
    if metrics is not None:
        collided = {
            e.index
            for e in metrics.collisions
            if e.at_fault and record.ego_times_s[0] + e.step * METRIC_STEP_S <= plan_time + 1e-9
        }
    for j in np.flatnonzero(record.agent_active[step]):
        length, width = record.agent_sizes[j, :2]
        corners = _box(record.agent_xy[step, j], float(record.agent_yaw[step, j]), length, width)
        fill = (255, 0, 0) if j in collided else _KIND_COLORS.get(record.agent_kinds[j], (90, 90, 90))
        draw.polygon(to_px(corners), fill=fill, outline=(0, 0, 0))
    driven = record.ego_states[record.ego_times_s <= plan_time + 1e-9, :2]
    if len(driven) > 1:
        draw.line(to_px(driven), fill=(0, 90, 255), width=3)
    if plan is not None:
        draw.line(to_px(np.concatenate([ego_xy[None], plan])), fill=(255, 150, 0), width=2)
    draw.polygon(to_px(ego_corners(ego_xy[None], np.array([ego_yaw]))[0]), fill=(0, 200, 90), outline=(0, 0, 0))
    lines = [title, f"t={plan_time - record.ego_times_s[0]:4.1f}s  v={state[3]:4.1f}m/s"]
    if record.approach is not None:
        lines.append(f"signal: {record.world.signal_state(record.approach, plan_time)}")
    if metrics is not None:
        lines += [
            f"{i.kind} at {i.time_s - record.ego_times_s[0]:.1f}s"
            for i in metrics.infractions
            if i.time_s <= plan_time + 0.05
        ]
    draw.text((4, 4), "\n".join(lines), fill=(0, 0, 0))
    return image


def _box(center: np.ndarray, yaw: float, length: float, width: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    local = np.array([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]]) * [length, width]
    return center + local @ np.array([[c, s], [-s, c]])


def write_episode_gif(result: ScenarioResult, path: str | Path, planner_name: str = "") -> Path:
    """A GIF of one run, one frame per planning tick at real time: the front camera beside the bird's-eye view."""
    record = result.record
    if not result.front_frames:
        raise ValueError("result: no front-camera frames; run with keep_frames=True")
    frames = []
    title = f"{result.scenario.name} {planner_name}".strip()
    for tick, front in enumerate(result.front_frames):
        bev = _bev_frame(record, tick, result.metrics, title)
        camera = Image.fromarray(front).resize((_BEV_SIZE_PX, round(_BEV_SIZE_PX * front.shape[0] / front.shape[1])))
        canvas = Image.new("RGB", (2 * _BEV_SIZE_PX, _BEV_SIZE_PX), (255, 255, 255))
        canvas.paste(bev, (0, 0))
        canvas.paste(camera, (_BEV_SIZE_PX, 0))
        if result.status == "failed" and tick == len(result.front_frames) - 1:
            ImageDraw.Draw(canvas).text(
                (_BEV_SIZE_PX + 4, camera.height + 4), f"failed: {result.failure}"[:60], fill=(200, 0, 0)
            )
        frames.append(canvas)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    duration_ms = round(1000 * (record.plans[1][0] - record.plans[0][0])) if len(record.plans) > 1 else 500
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return path


__all__ = [
    "DEFAULT_SIM_CONFIG",
    "INFRACTION_PENALTIES",
    "PLANNER_NAMES",
    "ConstantVelocityPlanner",
    "ExpertPlanner",
    "Observation",
    "OccVLAPlanner",
    "Planner",
    "ScenarioResult",
    "check_plan",
    "closed_loop_report",
    "ego_status",
    "evaluate_closed_loop",
    "format_closed_loop_table",
    "observe",
    "open_loop_l2",
    "run_closed_loop",
    "write_episode_gif",
]
