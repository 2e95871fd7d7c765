"""nuScenes-QA-style questions from a keyframe's annotations, following the official templates' logic.

Objects are (category word, status word, ego-frame position). Five template types (exist, count, object, status,
comparison) come in two hop counts: H0 asks about objects selected by category/status; H1 first selects a unique
reference object (or the ego car) and then objects in one of six directions from it. Directions follow nuScenes-QA:
the angle of (target - reference) from the ego heading, front within +-30 deg, front left (30, 90], back left
(90, 150), back beyond +-150, back right (-150, -90), front right [-90, -30). Questions whose answer would be
ambiguous (a non-unique reference, several candidate objects for object/status questions) or out of the official
answer set (counts above 10) are not asked, so every answer is true in the scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from occvla_hf.constants import QA_MAX_COUNT, QA_OBJECTS, QA_QUESTION_TYPES, QA_RELATIONS

QA_RANGE_M: float = 50.0  # objects farther than this from the ego are left out
QA_MIN_LIDAR_POINTS: int = 1  # objects the lidar does not see are left out
EGO_REFERENCE: str = "ego car"

_VEHICLE_STATUS = ("moving", "stopped", "parked")
STATUSES_BY_CATEGORY: dict[str, tuple[str, ...]] = {
    "car": _VEHICLE_STATUS,
    "truck": _VEHICLE_STATUS,
    "bus": _VEHICLE_STATUS,
    "trailer": _VEHICLE_STATUS,
    "construction vehicle": _VEHICLE_STATUS,
    "motorcycle": ("with rider", "without rider"),
    "bicycle": ("with rider", "without rider"),
    "pedestrian": ("moving", "standing", "not standing"),
    "barrier": (),
    "traffic cone": (),
}
assert set(STATUSES_BY_CATEGORY) == set(QA_OBJECTS)
_PLURALS = {"bus": "buses"}
_POSTFIX_STATUS = {"with rider", "without rider"}


@dataclass(frozen=True)
class Question:
    """One generated question: the fields of a nuScenes-QA question-file entry, less its sample token (the sim writes
    the files itself; it does not depend on the reader in `occvla_hf.data`)."""

    question: str
    answer: str
    template_type: str
    num_hop: int


@dataclass(frozen=True)
class QAObject:
    """An object as nuScenes-QA sees it: category word, status word (None for barriers/cones), ego-frame x, y."""

    category: str
    status: str | None
    x: float
    y: float


@dataclass(frozen=True)
class Selector:
    """Objects of a category (None = any "thing") with a status (None = any)."""

    category: str | None = None
    status: str | None = None

    def matches(self, obj: QAObject) -> bool:
        return (self.category is None or obj.category == self.category) and (
            self.status is None or obj.status == self.status
        )

    def phrase(self, plural: bool) -> str:
        noun = self.category or "thing"
        if plural:
            noun = _PLURALS.get(noun, noun + "s")
        if self.status is None:
            return noun
        if self.status in _POSTFIX_STATUS:
            return f"{noun} {self.status}"
        if self.status == "not standing":
            return f"{noun} that {'are' if plural else 'is'} not standing"
        return f"{self.status} {noun}"


def relation(reference_xy: tuple[float, float], target_xy: tuple[float, float]) -> str:
    """Direction of `target` as seen from `reference`, measured from the ego heading (+x)."""
    angle = float(np.degrees(np.arctan2(target_xy[1] - reference_xy[1], target_xy[0] - reference_xy[0])))
    if -30.0 <= angle <= 30.0:
        return "front"
    if 30.0 < angle <= 90.0:
        return "front left"
    if 90.0 < angle < 150.0:
        return "back left"
    if -150.0 < angle < -90.0:
        return "back right"
    if -90.0 <= angle < -30.0:
        return "front right"
    return "back"


def select(objects: list[QAObject], selector: Selector) -> list[QAObject]:
    return [o for o in objects if selector.matches(o)]


def related(objects: list[QAObject], reference: QAObject | None, rel: str, selector: Selector) -> list[QAObject]:
    """Objects matching `selector` in direction `rel` of `reference` (None = the ego car at the origin)."""
    origin = (0.0, 0.0) if reference is None else (reference.x, reference.y)
    return [o for o in objects if o is not reference and selector.matches(o) and relation(origin, (o.x, o.y)) == rel]


def _reference_phrase(reference: Selector | None) -> str:
    return f"the {EGO_REFERENCE}" if reference is None else f"the {reference.phrase(plural=False)}"


# ------------------------------------------------------------------------------------------------ templates (H0)


def exist_question(objects: list[QAObject], target: Selector) -> Question:
    answer = "yes" if select(objects, target) else "no"
    return Question(f"Are there any {target.phrase(plural=True)}?", answer, "exist", 0)


def count_question(objects: list[QAObject], target: Selector) -> Question | None:
    n = len(select(objects, target))
    if n > QA_MAX_COUNT:
        return None
    return Question(f"How many {target.phrase(plural=True)} are there?", str(n), "count", 0)


def object_question(objects: list[QAObject], status: str) -> Question | None:
    """'What is the <status> thing?' when exactly one object has that status."""
    found = select(objects, Selector(None, status))
    if len(found) != 1:
        return None
    return Question(f"What is the {Selector(None, status).phrase(plural=False)}?", found[0].category, "object", 0)


def status_question(objects: list[QAObject], category: str) -> Question | None:
    """'What is the status of the <category>?' when exactly one such object exists and it has a status."""
    found = select(objects, Selector(category))
    if len(found) != 1 or found[0].status is None:
        return None
    return Question(f"What is the status of the {category}?", found[0].status, "status", 0)


def comparison_question(objects: list[QAObject], first: Selector, second: Selector) -> Question | None:
    """'Does the <first> have the same status as the <second>?' for two distinct unique objects with statuses."""
    a, b = select(objects, first), select(objects, second)
    if len(a) != 1 or len(b) != 1 or a[0] is b[0] or a[0].status is None or b[0].status is None:
        return None
    answer = "yes" if a[0].status == b[0].status else "no"
    return Question(
        f"Does the {first.phrase(False)} have the same status as the {second.phrase(False)}?", answer, "comparison", 0
    )


# ------------------------------------------------------------------------------------------------ templates (H1)


def _unique(objects: list[QAObject], reference: Selector | None) -> tuple[bool, QAObject | None]:
    """(ok, object) for a reference selector: ok if it is the ego (None) or selects exactly one object."""
    if reference is None:
        return True, None
    found = select(objects, reference)
    return len(found) == 1, (found[0] if found else None)


def exist_related_question(
    objects: list[QAObject], target: Selector, rel: str, reference: Selector | None
) -> Question | None:
    ok, ref = _unique(objects, reference)
    if not ok:
        return None
    answer = "yes" if related(objects, ref, rel, target) else "no"
    text = f"Are there any {target.phrase(True)} to the {rel} of {_reference_phrase(reference)}?"
    return Question(text, answer, "exist", 1)


def count_related_question(
    objects: list[QAObject], target: Selector, rel: str, reference: Selector | None
) -> Question | None:
    ok, ref = _unique(objects, reference)
    if not ok:
        return None
    n = len(related(objects, ref, rel, target))
    if n > QA_MAX_COUNT:
        return None
    text = f"How many {target.phrase(True)} are to the {rel} of {_reference_phrase(reference)}?"
    return Question(text, str(n), "count", 1)


def object_related_question(
    objects: list[QAObject], target: Selector, rel: str, reference: Selector | None
) -> Question | None:
    """'What is the <status> thing to the <rel> of <reference>?' (target has no category)."""
    ok, ref = _unique(objects, reference)
    found = related(objects, ref, rel, target) if ok else []
    if len(found) != 1 or target.category is not None:
        return None
    text = f"What is the {target.phrase(False)} to the {rel} of {_reference_phrase(reference)}?"
    return Question(text, found[0].category, "object", 1)


def status_related_question(
    objects: list[QAObject], category: str, rel: str, reference: Selector | None
) -> Question | None:
    ok, ref = _unique(objects, reference)
    found = related(objects, ref, rel, Selector(category)) if ok else []
    if len(found) != 1 or found[0].status is None:
        return None
    text = f"What is the status of the {category} to the {rel} of {_reference_phrase(reference)}?"
    return Question(text, found[0].status, "status", 1)


def comparison_related_question(
    objects: list[QAObject], category: str, rel: str, reference: Selector | None, other: Selector
) -> Question | None:
    ok, ref = _unique(objects, reference)
    found = related(objects, ref, rel, Selector(category)) if ok else []
    others = select(objects, other)
    if len(found) != 1 or len(others) != 1 or found[0] is others[0] or found[0] is ref:
        return None
    if found[0].status is None or others[0].status is None:
        return None
    answer = "yes" if found[0].status == others[0].status else "no"
    text = (
        f"Does the {category} to the {rel} of {_reference_phrase(reference)} have the same status as "
        f"the {other.phrase(False)}?"
    )
    return Question(text, answer, "comparison", 1)


# ------------------------------------------------------------------------------------------------------ sampling


def _random_selector(rng: np.random.Generator, objects: list[QAObject], allow_thing: bool = True) -> Selector:
    """Half the time an existing object's (category, status), otherwise any valid combination."""
    if objects and rng.random() < 0.5:
        obj = objects[int(rng.integers(len(objects)))]
        category, status = obj.category, obj.status
    else:
        category = str(rng.choice(list(STATUSES_BY_CATEGORY)))
        statuses = STATUSES_BY_CATEGORY[category]
        status = str(rng.choice(statuses)) if statuses else None
    roll = rng.random()
    if roll < 0.35:
        status = None
    elif roll < 0.5 and allow_thing and status is not None:
        category = None
    return Selector(category, status)


def _unique_selector(rng: np.random.Generator, objects: list[QAObject]) -> Selector | None:
    """A selector that picks exactly one object (by category, else category + status), or None."""
    if not objects:
        return None
    obj = objects[int(rng.integers(len(objects)))]
    for sel in (Selector(obj.category), Selector(obj.category, obj.status)):
        if len(select(objects, sel)) == 1:
            return sel
    return None


def _sample(rng: np.random.Generator, objects: list[QAObject], template_type: str, num_hop: int) -> Question | None:
    statuses = sorted({o.status for o in objects if o.status is not None})
    categories = sorted({o.category for o in objects})
    rel = str(rng.choice(QA_RELATIONS))
    reference = None  # the ego car, for a quarter of the H1 questions; otherwise a unique object
    if num_hop == 1 and rng.random() >= 0.25:
        reference = _unique_selector(rng, objects)
        if reference is None:
            return None
    if template_type == "exist":
        target = _random_selector(rng, objects)
        return (
            exist_question(objects, target) if num_hop == 0 else exist_related_question(objects, target, rel, reference)
        )
    if template_type == "count":
        target = _random_selector(rng, objects)
        return (
            count_question(objects, target) if num_hop == 0 else count_related_question(objects, target, rel, reference)
        )
    if template_type == "object":
        if not statuses:
            return None
        status = str(rng.choice(statuses))
        if num_hop == 0:
            return object_question(objects, status)
        return object_related_question(objects, Selector(None, status if rng.random() < 0.6 else None), rel, reference)
    if template_type == "status":
        if not categories:
            return None
        category = str(rng.choice(categories))
        return (
            status_question(objects, category)
            if num_hop == 0
            else status_related_question(objects, category, rel, reference)
        )
    if template_type == "comparison":
        first, second = _unique_selector(rng, objects), _unique_selector(rng, objects)
        if second is None:
            return None
        if num_hop == 0:
            return None if first is None else comparison_question(objects, first, second)
        if not categories:
            return None
        return comparison_related_question(objects, str(rng.choice(categories)), rel, reference, second)
    raise ValueError(f"template_type: expected one of {QA_QUESTION_TYPES}, got {template_type!r}")


def generate_questions(objects: list[QAObject], rng: np.random.Generator, num_questions: int) -> list[Question]:
    """Up to `num_questions` distinct questions, template types and hops drawn uniformly."""
    out: list[Question] = []
    seen: set[str] = set()
    for _ in range(20 * num_questions):
        if len(out) >= num_questions:
            break
        template_type = QA_QUESTION_TYPES[int(rng.integers(len(QA_QUESTION_TYPES)))]
        question = _sample(rng, objects, template_type, int(rng.integers(2)))
        if question is not None and question.question not in seen:
            seen.add(question.question)
            out.append(question)
    return out
