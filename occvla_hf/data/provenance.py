"""Where a dataroot's data comes from: nuScenes, or the sim's procedural scenes (its provenance marker).

`occvla-hf sim` leaves `SIM_PROVENANCE_FILE` in its dataroot; `data build` reads it with `read_dataroot_source` and
records the source in every split's `DatasetInfo` (licence; description, whose last line holds the record as JSON),
the dataset card is written from there (YAML `license`, `pretty_name` and `occvla_source`: the name and, for sim
data, the generator's seed and package version), and the training recipes read the source back from the card of a
build folder or Hub dataset with `recorded_source` (the licence and wording of the model card follow from it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import DatasetInfo
from huggingface_hub import DatasetCard

from occvla_hf.constants import DATA_SOURCE_LICENSES, DATA_SOURCES, SIM_PROVENANCE_FILE

# Key of the dataset card's YAML that holds the source record.
CARD_SOURCE_KEY: str = "occvla_source"
_CARD_FILE: str = "README.md"
# Fields of the sim marker the card repeats (the marker holds the full settings).
_SIM_CARD_FIELDS: tuple[str, ...] = ("generator", "package_version", "seed", "num_scenes", "preset")
# Start of the `DatasetInfo.description` line that holds the record.
_INFO_PREFIX: str = "occvla-hf source: "


@dataclass(frozen=True)
class DataSource:
    """A dataset's source: `name` in `DATA_SOURCES`; `sim`: the sim marker's record (seed, package version, ...)."""

    name: str
    sim: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in DATA_SOURCES:
            raise ValueError(f"source: expected one of {DATA_SOURCES}, got {self.name!r}")

    @property
    def license(self) -> str:
        return DATA_SOURCE_LICENSES[self.name]

    @property
    def description(self) -> str:
        """One sentence naming the source (for `DatasetInfo.description` and the card)."""
        if self.name == "sim":
            return (
                f"Procedural driving scenes written by {self.sim.get('generator', 'occvla_hf.sim')} "
                f"(occvla-hf {self.sim.get('package_version', '?')}, seed {self.sim.get('seed', '?')}) in the "
                "nuScenes, Occ3D-nuScenes and nuScenes-QA formats; no real sensor data."
            )
        return "Keyframes of nuScenes read with the nuscenes-devkit, with Occ3D-nuScenes labels and nuScenes-QA."

    def card_record(self) -> dict[str, Any]:
        """The card's `occvla_source` entry."""
        return {"name": self.name, **{key: self.sim[key] for key in _SIM_CARD_FIELDS if key in self.sim}}

    def record_in(self, info: DatasetInfo) -> None:
        """Set `info.license` and `info.description` (the sentence, then the record as JSON on its last line)."""
        info.license = self.license
        info.description = f"{self.description}\n{_INFO_PREFIX}{json.dumps({'name': self.name, 'sim': dict(self.sim)})}"

    @classmethod
    def from_info(cls, info: DatasetInfo) -> DataSource | None:
        """The source `record_in` wrote into `info`; None if it holds none."""
        lines = [line for line in (info.description or "").splitlines() if line.startswith(_INFO_PREFIX)]
        if not lines:
            return None
        record = json.loads(lines[-1].removeprefix(_INFO_PREFIX))
        return cls(record["name"], record.get("sim") or {})


def read_dataroot_source(dataroot: str | os.PathLike) -> DataSource:
    """`sim` (with its record) when the dataroot holds the sim's provenance marker, else `nuscenes`."""
    marker = Path(dataroot) / SIM_PROVENANCE_FILE
    if not marker.is_file():
        return DataSource("nuscenes")
    record = json.loads(marker.read_text())
    if not isinstance(record, dict):
        raise ValueError(f"{marker}: expected a JSON object (the sim's provenance record), got {type(record)}")
    return DataSource("sim", record)


def recorded_source(data: str | os.PathLike) -> DataSource | None:
    """The source a `data build` folder (its README.md) or a Hub dataset (its card) records; None when there is no
    card or it records none (data built before the record existed, or by other tools)."""
    path = Path(data)
    if path.is_dir():
        if not (path / _CARD_FILE).is_file():
            return None
        card = DatasetCard.load(path / _CARD_FILE)
    else:
        card = DatasetCard.load(str(data))
    record = card.data.to_dict().get(CARD_SOURCE_KEY)
    if record is None:
        return None
    if not isinstance(record, Mapping) or "name" not in record:
        raise ValueError(f"{data}: the card's {CARD_SOURCE_KEY!r} must be a mapping with a 'name', got {record!r}")
    return DataSource(record["name"], {key: value for key, value in record.items() if key != "name"})


__all__ = ["CARD_SOURCE_KEY", "DataSource", "read_dataroot_source", "recorded_source"]
