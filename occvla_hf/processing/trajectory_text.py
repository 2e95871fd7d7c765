"""Text form of a future trajectory, for models that write waypoints as text (as GPT-Driver and OmniDrive do).

`trajectory_to_text` writes the (6, 2) waypoints in metres (ego frame) as `"[(x1,y1),(x2,y2),...,(x6,y6)]"` with two
decimals; `trajectory_from_text` reads it back. The round trip is exact at 0.01 m: every coordinate comes back within
0.005 m (rounded to the nearest centimetre), and text -> waypoints -> text gives the same text.
"""

from __future__ import annotations

import re

import numpy as np

from ..constants import NUM_WAYPOINTS

DECIMALS: int = 2

_NUMBER = r"(-?\d+\.\d{2})"
_POINT_RE = re.compile(rf"\({_NUMBER},{_NUMBER}\)")
_TEXT_RE = re.compile(rf"\[(?:{_POINT_RE.pattern},)*{_POINT_RE.pattern}\]")


def _format_m(value_m: float) -> str:
    """Two-decimal text of a coordinate; rounding happens once, and -0.00 is written as 0.00."""
    rounded = round(float(value_m), DECIMALS) + 0.0
    return f"{rounded:.{DECIMALS}f}"


def trajectory_to_text(trajectory: np.ndarray) -> str:
    """Waypoints (6, 2) in metres, ego frame -> `"[(x1,y1),...,(x6,y6)]"` with 0.01 m resolution."""
    trajectory = np.asarray(trajectory, dtype=np.float64)
    if trajectory.shape != (NUM_WAYPOINTS, 2):
        raise ValueError(f"trajectory: expected ({NUM_WAYPOINTS}, 2), got {trajectory.shape}")
    if not np.isfinite(trajectory).all():
        raise ValueError("trajectory: expected finite waypoints")
    points = ",".join(f"({_format_m(x)},{_format_m(y)})" for x, y in trajectory)
    return f"[{points}]"


def trajectory_from_text(text: str) -> np.ndarray:
    """`"[(x1,y1),...,(x6,y6)]"` -> waypoints (6, 2) float32 in metres; ValueError on any other text."""
    stripped = text.strip()
    if _TEXT_RE.fullmatch(stripped) is None:
        raise ValueError(f"trajectory text: expected '[(x1,y1),...]' with {DECIMALS} decimals, got {text!r}")
    points = _POINT_RE.findall(stripped)
    if len(points) != NUM_WAYPOINTS:
        raise ValueError(f"trajectory text: expected {NUM_WAYPOINTS} waypoints, got {len(points)}")
    return np.array(points, dtype=np.float64).astype(np.float32)
