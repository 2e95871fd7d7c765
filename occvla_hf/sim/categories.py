"""nuScenes taxonomy (categories, attributes, visibility levels) and the agent types the world spawns.

The tables written to `attribute.json` and `visibility.json` come from here (`category.json` from
`constants.NUSCENES_CATEGORIES`, which the datasets' class labels share), as does the mapping of every nuScenes
category to its Occ3D-nuScenes class (the lidarseg 16-class mapping) and to its nuScenes-QA word.
"""

from __future__ import annotations

from dataclasses import dataclass

from occvla_hf.constants import NUSCENES_CATEGORIES, OCC_CLASS_NAMES, QA_OBJECTS

# (attribute, description): the 8 official nuScenes attributes.
NUSCENES_ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("vehicle.moving", "Vehicle is moving."),
    ("vehicle.stopped", "Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move."),
    ("vehicle.parked", "Vehicle is stationary (usually for longer duration) with no immediate intent to move."),
    ("cycle.with_rider", "There is a rider on the bicycle or motorcycle."),
    ("cycle.without_rider", "There is NO rider on the bicycle or motorcycle."),
    ("pedestrian.sitting_lying_down", "The human is sitting or lying down."),
    ("pedestrian.standing", "The human is standing."),
    ("pedestrian.moving", "The human is moving."),
)

# (token, level, description): nuScenes visibility = fraction of the annotation visible over all six images.
NUSCENES_VISIBILITY: tuple[tuple[str, str, str], ...] = (
    ("1", "v0-40", "visibility of whole object is between 0 and 40%"),
    ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
    ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
    ("4", "v80-100", "visibility of whole object is between 80 and 100%"),
)

# nuScenes-QA words by Occ3D class (the object word is the class name with spaces) and by nuScenes attribute (status).
QA_CATEGORY_WORDS: dict[str, str] = {word.replace(" ", "_"): word for word in QA_OBJECTS}
QA_STATUS_WORDS: dict[str, str] = {
    "vehicle.moving": "moving",
    "vehicle.stopped": "stopped",
    "vehicle.parked": "parked",
    "cycle.with_rider": "with rider",
    "cycle.without_rider": "without rider",
    "pedestrian.moving": "moving",
    "pedestrian.standing": "standing",
    "pedestrian.sitting_lying_down": "not standing",
}

_OCC_CLASS_BY_CATEGORY: dict[str, str] = {name: occ for name, _, occ in NUSCENES_CATEGORIES}


def occ_class_of(category: str) -> int:
    """Occ3D-nuScenes class id of a nuScenes category name."""
    if category not in _OCC_CLASS_BY_CATEGORY:
        raise ValueError(f"category: expected a nuScenes category name, got {category!r}")
    return OCC_CLASS_NAMES.index(_OCC_CLASS_BY_CATEGORY[category])


def qa_word_of(category: str) -> str | None:
    """nuScenes-QA object word of a category, or None for categories nuScenes-QA leaves out."""
    return QA_CATEGORY_WORDS.get(_OCC_CLASS_BY_CATEGORY[category])


@dataclass(frozen=True)
class AgentType:
    """A kind of traffic participant the world spawns: nuScenes category, mean size and size jitter (metres)."""

    category: str
    length_m: float
    width_m: float
    height_m: float
    jitter: float = 0.08  # relative standard deviation of each dimension


AGENT_TYPES: dict[str, AgentType] = {
    "car": AgentType("vehicle.car", 4.6, 1.95, 1.7),
    "truck": AgentType("vehicle.truck", 7.0, 2.5, 3.0),
    "bus": AgentType("vehicle.bus.rigid", 11.0, 2.9, 3.4, jitter=0.04),
    "trailer": AgentType("vehicle.trailer", 10.5, 2.8, 3.6, jitter=0.05),
    "construction_vehicle": AgentType("vehicle.construction", 6.5, 2.8, 3.2),
    "motorcycle": AgentType("vehicle.motorcycle", 2.1, 0.8, 1.5, jitter=0.05),
    "bicycle": AgentType("vehicle.bicycle", 1.75, 0.6, 1.3, jitter=0.05),
    "pedestrian": AgentType("human.pedestrian.adult", 0.75, 0.7, 1.75, jitter=0.06),
    "child": AgentType("human.pedestrian.child", 0.55, 0.5, 1.2, jitter=0.06),
    "construction_worker": AgentType("human.pedestrian.construction_worker", 0.75, 0.7, 1.78, jitter=0.05),
    "barrier": AgentType("movable_object.barrier", 0.5, 2.2, 1.0, jitter=0.05),
    "traffic_cone": AgentType("movable_object.trafficcone", 0.42, 0.42, 0.9, jitter=0.05),
}
