"""`occvla-hf train [STAGE] --config FILE [--section.key VALUE ...]`: runs a training stage from a YAML recipe.

The stage comes from the positional argument or, without it, from the recipe's `stage:` key. Each stage is a recipe
dataclass and a function running it, registered in `recipe.TRAINING_STAGES`; its result has `output_dir` and
`metrics` (name -> float), which the command prints. Overrides after the file replace recipe values:
`--training.max_steps 10` sets `recipe["training"]["max_steps"]`; values are parsed as YAML (`1e-4` is a float,
`[1, 2]` a list) and `null` removes the key (`--model.from_vlm null`). The recipe is read and checked (unknown keys,
types, config fields) before anything is loaded; see `occvla_hf.training.recipe`.
"""

from __future__ import annotations

import argparse
import json
import math

from .recipe import TRAINING_STAGES, load_recipe, parse_recipe, run_recipe


def printable_metrics(metrics: dict[str, float | None]) -> dict[str, float | None]:
    """Metrics rounded to 4 digits for the log line; NaN and missing values (e.g. an eval metric over too few
    samples) print as null."""
    return {name: None if value is None or math.isnan(value) else round(value, 4) for name, value in metrics.items()}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `occvla-hf train`."""
    parser = subparsers.add_parser(
        "train",
        help="train a stage (" + ", ".join(TRAINING_STAGES) + ") from a YAML recipe",
        description=__doc__.splitlines()[0],
        epilog="Example: occvla-hf train vae --config vae --training.max_steps 100 --model.latent_type kl",
    )
    parser.add_argument(
        "stage", nargs="?", choices=sorted(TRAINING_STAGES), help="stage to run (default: the recipe's `stage:` key)"
    )
    parser.add_argument(
        "--config",
        nargs=argparse.REMAINDER,
        required=True,
        help="FILE [--section.key VALUE ...]: the YAML recipe (a path, or a shipped recipe by name: joint, vae, "
        "embedded_joint, ...), then overrides of its values",
    )

    def run(args: argparse.Namespace) -> int:
        if not args.config:
            parser.error("--config: expected a YAML recipe file or a shipped recipe name")
        try:
            recipe = parse_recipe(load_recipe(args.config[0], args.config[1:], args.stage))
        except (ValueError, TypeError, FileNotFoundError) as error:
            parser.error(str(error))
        result = run_recipe(recipe)
        print(
            f"{recipe.stage}: checkpoint in {result.output_dir}\nmetrics: {json.dumps(printable_metrics(result.metrics))}"
        )
        return 0

    parser.set_defaults(func=run)
