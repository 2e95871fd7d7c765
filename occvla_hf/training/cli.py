"""`occvla-hf train [STAGE] --config FILE [--section.key VALUE ...]`: runs a training stage from a YAML recipe.

The stage comes from the positional argument or, without it, from the recipe's `stage:` key. Each stage is a
function `recipe (Mapping) -> result` registered in `TRAINING_STAGES`, whose result has `output_dir` and `metrics`
(name -> float), which the command prints; a new stage is one more entry there. Overrides after the file replace
recipe values: `--training.max_steps 10` sets `recipe["training"]["max_steps"]`; values are parsed as YAML (`1e-4`
is a float, `[1, 2]` a list, `null` None).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

# Stage name -> "module:function" taking the parsed recipe; imported only when that stage runs.
TRAINING_STAGES: dict[str, str] = {
    "vae": "occvla_hf.training.vae:train_from_config",
    "joint": "occvla_hf.training.joint:train_joint",
}


class _RecipeLoader(yaml.SafeLoader):
    """YAML 1.1 safe loader that also reads exponent floats without a dot (`1e-4`) as floats, as YAML 1.2 does."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def parse_value(text: str) -> Any:
    """One override value, parsed as a YAML scalar or flow collection."""
    return yaml.load(text, Loader=_RecipeLoader)


def apply_overrides(recipe: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Returns a copy of `recipe` with `--a.b VALUE` / `--a.b=VALUE` pairs applied (dots descend into sections)."""
    result = yaml.load(yaml.safe_dump(recipe), Loader=_RecipeLoader) or {}  # deep copy through the same types
    tokens = list(overrides)
    while tokens:
        token = tokens.pop(0)
        if not token.startswith("--") or len(token) <= 2:
            raise ValueError(f"override: expected --section.key VALUE, got {token!r}")
        key, has_value, value = token[2:].partition("=")
        if not has_value:
            if not tokens:
                raise ValueError(f"override {token}: missing value")
            value = tokens.pop(0)
        *sections, leaf = key.split(".")
        node = result
        for depth, section in enumerate(sections):
            node = node.setdefault(section, {})
            if not isinstance(node, dict):
                raise TypeError(f"override {token}: {'.'.join(sections[: depth + 1])} is not a section")
        node[leaf] = parse_value(value)
    return result


def load_recipe(path: str | os.PathLike, overrides: Sequence[str] = (), stage: str | None = None) -> dict[str, Any]:
    """Reads a YAML recipe, applies overrides and settles `stage` (argument and `stage:` key must agree)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config: no recipe file at {path}")
    recipe = yaml.load(path.read_text(), Loader=_RecipeLoader) or {}
    if not isinstance(recipe, dict):
        raise TypeError(f"config: {path} must hold a mapping of keys, got {type(recipe).__name__}")
    recipe = apply_overrides(recipe, overrides)
    recipe_stage = recipe.get("stage")
    if stage is not None and recipe_stage is not None and stage != recipe_stage:
        raise ValueError(f"stage: the command asks for {stage!r} but {path} is a {recipe_stage!r} recipe")
    resolved = stage if stage is not None else recipe_stage
    if resolved not in TRAINING_STAGES:
        raise ValueError(
            f"stage: expected one of {sorted(TRAINING_STAGES)} (argument or `stage:` key), got {resolved!r}"
        )
    recipe["stage"] = resolved
    return recipe


def run_recipe(recipe: dict[str, Any]) -> Any:
    """Runs the stage named by `recipe["stage"]` and returns its result."""
    module_name, function_name = TRAINING_STAGES[recipe["stage"]].split(":")
    return getattr(importlib.import_module(module_name), function_name)(recipe)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `occvla-hf train`."""
    parser = subparsers.add_parser(
        "train",
        help="train a stage (" + ", ".join(TRAINING_STAGES) + ") from a YAML recipe",
        description=__doc__.splitlines()[0],
        epilog="Example: occvla-hf train vae --config configs/vae.yaml --training.max_steps 100 --model.latent_type kl",
    )
    parser.add_argument(
        "stage", nargs="?", choices=sorted(TRAINING_STAGES), help="stage to run (default: the recipe's `stage:` key)"
    )
    parser.add_argument(
        "--config",
        nargs=argparse.REMAINDER,
        required=True,
        help="FILE [--section.key VALUE ...]: the YAML recipe, then overrides of its values",
    )

    def run(args: argparse.Namespace) -> int:
        if not args.config:
            parser.error("--config: expected a YAML recipe file")
        try:
            recipe = load_recipe(args.config[0], args.config[1:], args.stage)
        except (ValueError, TypeError, FileNotFoundError) as error:
            parser.error(str(error))
        result = run_recipe(recipe)
        metrics = {name: None if math.isnan(value) else round(value, 4) for name, value in result.metrics.items()}
        print(f"{recipe['stage']}: checkpoint in {result.output_dir}\nmetrics: {json.dumps(metrics)}")
        return 0

    parser.set_defaults(func=run)
