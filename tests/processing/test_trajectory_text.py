"""Trajectory text codec: hand-checked text, exact round trip at 0.01 m on random trajectories, bad input errors."""

from __future__ import annotations

import numpy as np
import pytest

from occvla_hf.processing.trajectory_text import trajectory_from_text, trajectory_to_text


def test_text_form_is_two_decimal_waypoints() -> None:
    trajectory = np.array([[1.0, 0.0], [2.004, -0.006], [3.5, 0.25], [-0.001, 10.0], [12.345678, -3.2], [40.0, 0.1]])
    text = "[(1.00,0.00),(2.00,-0.01),(3.50,0.25),(0.00,10.00),(12.35,-3.20),(40.00,0.10)]"
    assert trajectory_to_text(trajectory) == text
    np.testing.assert_array_equal(
        trajectory_from_text(text),
        np.array([[1.0, 0.0], [2.0, -0.01], [3.5, 0.25], [0.0, 10.0], [12.35, -3.2], [40.0, 0.1]], dtype=np.float32),
    )


def test_round_trip_on_random_trajectories_is_exact_at_one_centimetre() -> None:
    rng = np.random.default_rng(0)
    for trajectory in rng.uniform(-60.0, 60.0, size=(200, 6, 2)).astype(np.float32):
        text = trajectory_to_text(trajectory)
        decoded = trajectory_from_text(text)
        assert decoded.dtype == np.float32 and decoded.shape == (6, 2)
        assert np.abs(decoded.astype(np.float64) - trajectory).max() <= 0.005 + 1e-5
        assert trajectory_to_text(decoded) == text


def test_surrounding_whitespace_is_ignored() -> None:
    text = "[(1.00,0.00),(2.00,0.00),(3.00,0.00),(4.00,0.00),(5.00,0.00),(6.00,0.00)]"
    np.testing.assert_array_equal(trajectory_from_text(f"  {text}\n"), trajectory_from_text(text))


@pytest.mark.parametrize(
    "text",
    [
        "[(1.00,0.00),(2.00,0.00)]",  # too few waypoints
        "[(1.0,0.00),(2.00,0.00),(3.00,0.00),(4.00,0.00),(5.00,0.00),(6.00,0.00)]",  # one decimal
        "(1.00,0.00),(2.00,0.00),(3.00,0.00),(4.00,0.00),(5.00,0.00),(6.00,0.00)",  # no brackets
        "keep, straight",
    ],
)
def test_malformed_text_raises_naming_trajectory_text(text: str) -> None:
    with pytest.raises(ValueError, match="trajectory text"):
        trajectory_from_text(text)


@pytest.mark.parametrize("trajectory", [np.zeros((6, 3)), np.zeros((5, 2)), np.full((6, 2), np.inf)])
def test_bad_trajectory_raises_naming_trajectory(trajectory: np.ndarray) -> None:
    with pytest.raises(ValueError, match="trajectory"):
        trajectory_to_text(trajectory)
