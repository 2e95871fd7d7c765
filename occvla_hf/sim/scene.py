"""One simulated scene: its static world, the traffic track, and per-keyframe views of both.

`simulate_scene(seed, config)` is deterministic; the accessors give what the writers (and tests) need: ego poses,
annotated agent boxes, and all boxes in the ego frame of a keyframe.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from occvla_hf.geometry import wrap_angle
from occvla_hf.sim.agents import Agent, SceneTrack, simulate, spawn_agents
from occvla_hf.sim.categories import occ_class_of
from occvla_hf.sim.config import SimConfig
from occvla_hf.sim.geometry import world_to_frame_2d
from occvla_hf.sim.layout import World, build_world
from occvla_hf.sim.render import FrameBoxes, class_color

RENDER_RANGE_M: float = 160.0


@dataclass
class Scene:
    """A simulated scene (world frame = the layout frame; the nuScenes writer maps it to global coordinates)."""

    world: World
    track: SceneTrack
    sun_world: np.ndarray  # (3,) unit vector towards the sun

    @property
    def num_keyframes(self) -> int:
        return self.track.num_keyframes

    def ego_pose(self, k: int) -> tuple[np.ndarray, float]:
        """Ego origin (2,) and yaw at keyframe k, world frame."""
        return self.track.ego_xy[k], float(self.track.ego_yaw[k])

    def agent_boxes(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices (M,) of agents present at keyframe k and their world boxes (M, 7) in BOX_FIELDS order."""
        return self.track.boxes_at(k)

    def agent_boxes_ego(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Like `agent_boxes`, in the ego frame of keyframe k."""
        idx, boxes = self.agent_boxes(k)
        return idx, boxes_in_ego_frame(boxes, *self.ego_pose(k))

    def frame_boxes(self, k: int) -> FrameBoxes:
        """Every box within RENDER_RANGE_M of the ego at keyframe k (static geometry first), in its ego frame."""
        idx, boxes = self.agent_boxes(k)
        ego_xy, ego_yaw = self.ego_pose(k)
        return frame_boxes(self.world, ego_xy, ego_yaw, idx, boxes, self.track.categories, self.track.brightness)

    def sun_ego(self, k: int) -> np.ndarray:
        return sun_in_ego_frame(self.sun_world, self.ego_pose(k)[1])


def frame_boxes(
    world: World,
    ego_xy: np.ndarray,
    ego_yaw: float,
    agent_index: np.ndarray,
    agent_boxes: np.ndarray,
    categories: list[str],
    brightness: np.ndarray,
) -> FrameBoxes:
    """The boxes to render from the ego pose (`ego_xy` (2,), `ego_yaw`, world frame): the static geometry and the
    agents `agent_index` (M,) with world boxes `agent_boxes` (M, 7) within RENDER_RANGE_M, in the ego frame.
    `categories` and `brightness` are indexed by agent index."""
    static = world.static
    near = np.hypot(*(static.centers[:, :2] - ego_xy).T) < RENDER_RANGE_M
    agent = boxes_in_ego_frame(agent_boxes, ego_xy, ego_yaw)
    keep = np.hypot(agent[:, 0], agent[:, 1]) < RENDER_RANGE_M
    idx, agent = agent_index[keep], agent[keep]
    static_centers = static.centers[near].copy()
    static_centers[:, :2] = world_to_frame_2d(static_centers[:, :2], ego_xy, ego_yaw)
    agent_classes = np.array([occ_class_of(categories[i]) for i in idx], dtype=np.uint8)
    agent_colors = np.array([class_color(c) * brightness[i] for c, i in zip(agent_classes, idx)])
    return FrameBoxes(
        centers=np.concatenate([static_centers, agent[:, :3]]),
        sizes=np.concatenate([static.sizes[near], agent[:, 3:6]]),
        yaws=np.concatenate([wrap_angle(static.yaws[near] - ego_yaw), agent[:, 6]]),
        occ_classes=np.concatenate([static.occ_classes[near], agent_classes]).astype(np.uint8),
        colors=np.concatenate([static.colors[near], agent_colors.reshape(-1, 3)]).astype(np.float32),
        annotation_index=np.concatenate([np.full(int(near.sum()), -1), idx]).astype(np.int64),
    )


def boxes_in_ego_frame(boxes: np.ndarray, ego_xy: np.ndarray, ego_yaw: float) -> np.ndarray:
    """World boxes (M, 7) in BOX_FIELDS order expressed in the ego frame of the pose (`ego_xy`, `ego_yaw`)."""
    out = boxes.copy()
    out[:, :2] = world_to_frame_2d(boxes[:, :2], ego_xy, ego_yaw)
    out[:, 6] = wrap_angle(boxes[:, 6] - ego_yaw)
    return out


def sun_in_ego_frame(sun_world: np.ndarray, ego_yaw: float) -> np.ndarray:
    """(3,) direction towards the sun in the frame of an ego heading `ego_yaw`."""
    c, s = np.cos(-ego_yaw), np.sin(-ego_yaw)
    x, y, z = sun_world
    return np.array([c * x - s * y, s * x + c * y, z])


def scene_setup(
    seed: np.random.SeedSequence | int, config: SimConfig, layout: str | None = None
) -> tuple[World, list[Agent], np.ndarray]:
    """The static world, the agents in their initial state (the ego first) and the sun direction (3,) of the scene
    `simulate_scene(seed, config, layout)` simulates."""
    seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    rng = np.random.default_rng(seq)
    world = build_world(rng, layout)
    agents = spawn_agents(world, rng, config.scene_duration_s)
    elevation, azimuth = rng.uniform(np.deg2rad(30), np.deg2rad(65)), rng.uniform(0, 2 * np.pi)
    sun = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
    return world, agents, sun


def simulate_scene(seed: np.random.SeedSequence | int, config: SimConfig, layout: str | None = None) -> Scene:
    """Build and simulate one scene from a seed."""
    world, agents, sun = scene_setup(seed, config, layout)
    return Scene(world, simulate(world, agents, config), sun)
