"""The driven ego: a kinematic bicycle with actuator limits, and the controller that tracks a planned trajectory.

Kinematic bicycle about the ego origin (the rear axle; the box centre lies `EGO_CENTER_AHEAD_M` ahead of it):

    x' = v cos(yaw),  y' = v sin(yaw),  yaw' = v tan(steer) / WHEELBASE_M,  v' = accel

integrated at `control_step_s` with the mid-point speed and heading. The commanded acceleration and steering angle
are limited (`VehicleLimits`): acceleration in [-max_decel, max_accel] reached at most at `max_jerk`, steering within
+-max_steer reached at most at `max_steer_rate`, and the speed never drops below 0 (no reversing).

`TrajectoryTracker` follows a plan of waypoints (metres, in the ego frame of the pose it was planned from, one
every `WAYPOINT_STEP_S`): pure pursuit on the waypoint polyline for the steering, and for the acceleration the
plan's distance profile S(t) (a monotone cubic, PCHIP, through the cumulative waypoint distances) as
`accel = S''(t) + K_SPEED (S'(t) - v) + K_DISTANCE (S(t) - s)` with s the ego's distance along the plan; a plan
that stands still (or slows to a stop) brakes the ego to a standstill instead of letting it creep.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator

from occvla_hf.constants import NUM_WAYPOINTS, WAYPOINT_STEP_S
from occvla_hf.geometry import wrap_angle
from occvla_hf.sim.agents import EGO_CENTER_AHEAD_M, MAX_DECEL_MPS2
from occvla_hf.sim.geometry import Polyline, frame_to_world_2d, world_to_frame_2d

WHEELBASE_M: float = 2.588  # Renault Zoe, the nuScenes ego
K_SPEED: float = 1.5  # 1/s, speed error gain of the longitudinal controller
K_DISTANCE: float = 0.5  # 1/s^2, distance error gain
PURSUIT_TIME_S: float = 0.8  # pure pursuit look-ahead distance = speed x this, at least MIN_PURSUIT_M
MIN_PURSUIT_M: float = 3.0
MIN_PLAN_LENGTH_M: float = 0.1  # a plan shorter than this means "stand still"
STOP_SPEED_MPS: float = 0.1  # a planned speed below this, at an ego speed below HOLD_SPEED_MPS, means "stop"
HOLD_SPEED_MPS: float = 0.5
HOLD_DECEL_MPS2: float = 1.0  # braking that brings a crawling ego to a standstill (and holds it)


@dataclass(frozen=True)
class VehicleLimits:
    """Actuator limits of the ego (SI units, radians)."""

    max_accel_mps2: float = 4.0
    max_decel_mps2: float = MAX_DECEL_MPS2
    max_jerk_mps3: float = 15.0
    max_steer_rad: float = 0.6
    max_steer_rate_radps: float = 0.8


@dataclass(frozen=True)
class EgoState:
    """Ego origin (x, y), heading, speed, longitudinal acceleration and steering angle, world frame."""

    x: float
    y: float
    yaw: float
    speed_mps: float
    accel_mps2: float
    steer_rad: float

    @property
    def xy(self) -> np.ndarray:
        return np.array([self.x, self.y])

    @property
    def center_xy(self) -> np.ndarray:
        """(2,) centre of the ego box."""
        return self.xy + EGO_CENTER_AHEAD_M * np.array([np.cos(self.yaw), np.sin(self.yaw)])


def bicycle_step(
    state: EgoState, accel_cmd: float, steer_cmd: float, dt: float, limits: VehicleLimits = VehicleLimits()
) -> EgoState:
    """The state `dt` seconds later under the commands, after the limits of `limits`."""
    accel_target = float(np.clip(accel_cmd, -limits.max_decel_mps2, limits.max_accel_mps2))
    max_da = limits.max_jerk_mps3 * dt
    accel = state.accel_mps2 + float(np.clip(accel_target - state.accel_mps2, -max_da, max_da))
    steer_target = float(np.clip(steer_cmd, -limits.max_steer_rad, limits.max_steer_rad))
    max_ds = limits.max_steer_rate_radps * dt
    steer = state.steer_rad + float(np.clip(steer_target - state.steer_rad, -max_ds, max_ds))
    speed = max(state.speed_mps + accel * dt, 0.0)
    if speed == 0.0 and accel < 0.0:  # standing: the brakes hold, they do not push backwards
        accel = 0.0
    mid_speed = 0.5 * (state.speed_mps + speed)
    yaw_rate = mid_speed * np.tan(steer) / WHEELBASE_M
    mid_yaw = state.yaw + 0.5 * yaw_rate * dt
    return EgoState(
        x=state.x + mid_speed * dt * float(np.cos(mid_yaw)),
        y=state.y + mid_speed * dt * float(np.sin(mid_yaw)),
        yaw=float(wrap_angle(state.yaw + yaw_rate * dt)),
        speed_mps=speed,
        accel_mps2=accel,
        steer_rad=steer,
    )


class TrajectoryTracker:
    """Commands that follow one plan from the pose it was made at (see the module docstring).

    Args:
        plan: (6, 2) waypoints, metres, in the ego frame of `start` (x forward, y left), at 0.5 s steps.
        start: the ego state the plan was made from.
    """

    def __init__(self, plan: np.ndarray, start: EgoState) -> None:
        plan = np.asarray(plan, dtype=np.float64)
        if plan.shape != (NUM_WAYPOINTS, 2) or not np.isfinite(plan).all():
            raise ValueError(f"plan: expected finite ({NUM_WAYPOINTS}, 2) waypoints, got {plan.shape}")
        self.waypoints_world = frame_to_world_2d(plan, start.xy, start.yaw)  # (6, 2)
        points = np.concatenate([[start.xy], self.waypoints_world])  # (7, 2)
        steps = np.linalg.norm(np.diff(points, axis=0), axis=1)
        distance = np.concatenate([[0.0], np.cumsum(steps)])  # (7,)
        times = WAYPOINT_STEP_S * np.arange(NUM_WAYPOINTS + 1)
        self.standing = distance[-1] < MIN_PLAN_LENGTH_M
        self.path = None if self.standing else Polyline.from_points(points)
        self.profile = PchipInterpolator(times, distance)
        self.horizon_s = float(times[-1])
        self.start = start

    def command(self, state: EgoState, elapsed_s: float) -> tuple[float, float]:
        """(acceleration, steering angle) for `state`, `elapsed_s` seconds after the plan's start."""
        tau = min(elapsed_s, self.horizon_s)
        if self.standing:
            return -max(K_SPEED * state.speed_mps, HOLD_DECEL_MPS2), state.steer_rad
        s_ego, _ = self.path.project(state.xy[None])
        target_s = float(self.profile(tau))
        speed = float(self.profile.derivative(1)(tau))
        accel = float(self.profile.derivative(2)(tau)) if elapsed_s < self.horizon_s else 0.0
        accel += K_SPEED * (speed - state.speed_mps) + K_DISTANCE * (target_s - float(s_ego[0]))
        if speed < STOP_SPEED_MPS and state.speed_mps < HOLD_SPEED_MPS:
            accel = min(accel, -HOLD_DECEL_MPS2)
        return accel, self._pursuit_steer(state, float(s_ego[0]))

    def _pursuit_steer(self, state: EgoState, s_ego: float) -> float:
        """Pure pursuit: the steering angle of the arc from the origin through the path point a look-ahead away."""
        lookahead = max(PURSUIT_TIME_S * state.speed_mps, MIN_PURSUIT_M)
        along = s_ego + lookahead
        if along <= self.path.length:
            target, _ = self.path.interpolate(along)
        else:  # beyond the plan: continue along its last direction
            end, heading = self.path.interpolate(self.path.length)
            target = end + (along - self.path.length) * np.array([np.cos(heading), np.sin(heading)])
        local = world_to_frame_2d(target, state.xy, state.yaw)
        distance = float(np.hypot(*local))
        if distance < 1e-6:
            return state.steer_rad
        alpha = float(np.arctan2(local[1], local[0]))
        return float(np.arctan2(2.0 * WHEELBASE_M * np.sin(alpha), distance))
