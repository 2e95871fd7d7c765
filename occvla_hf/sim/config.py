"""Generation settings of the procedural driving world, and named presets.

The whole output of `generate_dataset` is a pure function of (seed, `SimConfig`, number of scenes, version).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

# nuScenes versions the generator writes (scene names and splits of the devkit's lists).
VERSIONS: tuple[str, ...] = ("v1.0-mini", "v1.0-trainval")
# nuScenes camera resolution; `SimConfig.scale` multiplies it (and the intrinsics).
BASE_IMAGE_WIDTH_PX: int = 1600
BASE_IMAGE_HEIGHT_PX: int = 900


@dataclass(frozen=True)
class SimConfig:
    """Settings of one generation run.

    Args:
        scale: Image size factor applied to 1600 x 900 (and to the camera intrinsics).
        scene_duration_s: Length of a scene; keyframes are taken at `keyframe_rate_hz` from t = 0.
        keyframe_rate_hz: Keyframe (sample) rate; nuScenes annotates at 2 Hz.
        sim_step_s: Integration step of the traffic simulation (a divisor of the keyframe period).
        jpeg_quality: JPEG quality of the camera images (4:4:4 chroma, fixed for byte-identical output).
        lidar_beams: Number of LIDAR_TOP rings written to the `.pcd.bin` files.
        lidar_mask_oversampling: Elevation oversampling of the ray bundle used for `mask_lidar` (dense beams stand
            in for the accumulated sweeps Occ3D uses); every `lidar_mask_oversampling`-th row is a written ring.
        lidar_azimuth_steps: Lidar rays per ring over 360 degrees.
        lidar_max_range_m: Returns beyond this range are dropped.
        questions_per_keyframe: Target number of nuScenes-QA questions per keyframe.
        annotation_range_m: Agents whose centre is within this horizontal distance of the ego are annotated.
    """

    scale: float = 0.25
    scene_duration_s: float = 20.0
    keyframe_rate_hz: float = 2.0
    sim_step_s: float = 0.25
    jpeg_quality: int = 90
    lidar_beams: int = 32
    lidar_mask_oversampling: int = 4
    lidar_azimuth_steps: int = 512
    lidar_max_range_m: float = 70.0
    questions_per_keyframe: int = 10
    annotation_range_m: float = 60.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise TypeError(f"{field.name}: expected an int, got {value!r}")
            if field.type == "float" and (
                isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            ):
                raise TypeError(f"{field.name}: expected a finite float, got {value!r}")
        if not 0.01 <= self.scale <= 1.0:
            raise ValueError(f"scale: expected a float in [0.01, 1], got {self.scale}")
        if self.keyframe_rate_hz <= 0:
            raise ValueError(f"keyframe_rate_hz: expected > 0, got {self.keyframe_rate_hz}")
        if self.scene_duration_s < self.keyframe_period_s:
            raise ValueError(
                f"scene_duration_s: expected at least one keyframe period ({self.keyframe_period_s} s at "
                f"keyframe_rate_hz={self.keyframe_rate_hz}), got {self.scene_duration_s}"
            )
        if self.sim_step_s <= 0 or abs(self.keyframe_period_s / self.sim_step_s - self.steps_per_keyframe) > 1e-9:
            raise ValueError(
                f"sim_step_s: expected a positive divisor of the keyframe period {self.keyframe_period_s} s, "
                f"got {self.sim_step_s}"
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality: expected an int in [1, 100], got {self.jpeg_quality}")
        for name in ("lidar_beams", "lidar_mask_oversampling", "lidar_azimuth_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.lidar_max_range_m <= 0:
            raise ValueError(f"lidar_max_range_m: expected > 0, got {self.lidar_max_range_m}")
        for name in ("questions_per_keyframe", "annotation_range_m"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")

    @property
    def keyframe_period_s(self) -> float:
        return 1.0 / self.keyframe_rate_hz

    @property
    def num_keyframes(self) -> int:
        return int(round(self.scene_duration_s * self.keyframe_rate_hz))

    @property
    def steps_per_keyframe(self) -> int:
        return int(round(self.keyframe_period_s / self.sim_step_s))

    @property
    def image_size_px(self) -> tuple[int, int]:
        """(width, height) of every camera image."""
        return round(BASE_IMAGE_WIDTH_PX * self.scale), round(BASE_IMAGE_HEIGHT_PX * self.scale)


DEFAULT_SEED: int = 0
DEFAULT_VERSION: str = "v1.0-mini"
# Master seed of held-out evaluation scenes: scene i of seed s is simulated from the seed sequence (s, i), so a
# different master seed gives scenes disjoint from every training scene of seed 0.
HELD_OUT_SEED: int = 1000


@dataclass(frozen=True)
class Preset:
    """A named generation run: number of scenes, config, master seed and nuScenes version."""

    num_scenes: int
    config: SimConfig
    seed: int = DEFAULT_SEED
    version: str = DEFAULT_VERSION


PRESETS: dict[str, Preset] = {
    # Ten official v1.0-mini scenes (8 mini_train + 2 mini_val), short and small: the test-suite dataset.
    "mini": Preset(num_scenes=10, config=SimConfig(scale=0.1, scene_duration_s=5.0, lidar_azimuth_steps=256)),
    # Two scenes (one mini_train, one mini_val) of 3 s at 160 x 90: generates in a few seconds.
    "tiny": Preset(
        num_scenes=2,
        config=SimConfig(scale=0.1, scene_duration_s=3.0, lidar_azimuth_steps=256, questions_per_keyframe=6),
    ),
    # Data at scale, 400 x 225 px, 20 s scenes (40 keyframes each), official v1.0-trainval names: 375 scenes of seed 0,
    # 300 of the train split (12,000 training keyframes) and 75 of the val split (3,000 keyframes, the validation
    # range: settings are chosen there). Two questions per keyframe keep the QA rows at twice the planning rows.
    "scale": Preset(
        num_scenes=375,
        config=SimConfig(scale=0.25, scene_duration_s=20.0, questions_per_keyframe=2),
        version="v1.0-trainval",
    ),
    # Its held-out scenes: 40 of the same settings from `HELD_OUT_SEED` (1,600 keyframes, disjoint from `scale`),
    # touched only for the final tables; four questions per keyframe (6,400: about 640 per question type and hop).
    "scale_heldout": Preset(
        num_scenes=40,
        config=SimConfig(scale=0.25, scene_duration_s=20.0, questions_per_keyframe=4),
        seed=HELD_OUT_SEED,
        version="v1.0-trainval",
    ),
}


def resolve_config(preset: str | None, config: SimConfig | None, **overrides: object) -> SimConfig:
    """The config of a run: `config`, else the preset's, else the defaults; then non-None `overrides` applied."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    base = config or (PRESETS[preset].config if preset is not None else SimConfig())
    known = {f.name for f in fields(SimConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"overrides: unknown SimConfig fields {sorted(unknown)}")
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
