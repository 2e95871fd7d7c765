"""Training recipes: YAML files read into typed dataclasses, one per stage (`VAERecipe`, `JointRecipe`).

Reading a file (`load_recipe`) gives a mapping of sections:

* YAML, with exponent floats without a dot (`1e-4`) read as floats, as YAML 1.2 does;
* `extends: PARENT.yaml` (relative to the file) starts from the parent recipe and merges the file into it: mappings
  key by key, other values replace, `null` removes the key (so the field takes its default); the ablation recipes
  are such files, the parent plus the one switch they change;
* overrides `--a.b VALUE` (the command line) set `recipe["a"]["b"]` to the YAML value `VALUE`; `null` removes the key;
* `stage`: the command's stage and the recipe's `stage:` key must agree.

A stage's dataclass is built from that mapping by `parse_section`: unknown keys fail with the closest known key as a
suggestion, values are checked against the field types, `null` stands for the field's default, and sections typed
as dataclasses are parsed the same way. Sections handed on to a config class as keyword arguments (`model.config` ->
`OccVLAConfig`, `training` -> `TrainingArguments`) have their keys checked against its fields (`check_fields`).

At import this module loads neither torch nor transformers (the stage's own module does, when `parse_recipe`
imports it), so the command line can read a recipe file cheaply.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import logging
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple, TypeVar

import yaml

if TYPE_CHECKING:
    from typing_extensions import Self

T = TypeVar("T")
logger = logging.getLogger(__name__)

EXTENDS_KEY: str = "extends"
# transformers' checkpoint folders and the file its Trainer writes last into each (so a folder without it is partial).
_CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)")
_TRAINER_STATE_FILE = "trainer_state.json"


class TrainingStage(NamedTuple):
    """Where a stage lives: its recipe dataclass and the function running it (`module:name`, imported lazily)."""

    recipe_class: str
    run: str


TRAINING_STAGES: dict[str, TrainingStage] = {
    "vae": TrainingStage("occvla_hf.training.vae:VAERecipe", "occvla_hf.training.vae:train_from_config"),
    "joint": TrainingStage("occvla_hf.training.joint:JointRecipe", "occvla_hf.training.joint:train_joint"),
}


# ---------------------------------------------------------------------------------------------------- files


class _RecipeLoader(yaml.SafeLoader):
    """YAML 1.1 safe loader that reads booleans and exponent floats as YAML 1.2 does: only `true` / `false` are
    booleans (`save_strategy: no`, a TrainingArguments value, stays the string "no"), and `1e-4` is a float."""


_RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def parse_value(text: str) -> Any:
    """One override value, parsed as a YAML scalar or flow collection."""
    return yaml.load(text, Loader=_RecipeLoader)


def merge_recipes(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `changes` merged in: mappings key by key, other values replace, `None` removes the key."""
    merged = copy.deepcopy(dict(base))
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_recipes(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# The recipes shipped with the package: the repository's `configs/`, package data `occvla_hf/configs/` in a wheel.
BUILTIN_RECIPES_DIR: Path = Path(__file__).resolve().parent.parent / "configs"
_RECIPE_SUFFIX: str = ".yaml"


def builtin_recipes() -> list[str]:
    """Names of the shipped recipes (`joint`, `vae`, `embedded_joint`, ...)."""
    return sorted(path.stem for path in BUILTIN_RECIPES_DIR.glob(f"*{_RECIPE_SUFFIX}"))


def resolve_recipe(name_or_path: str | os.PathLike) -> Path:
    """A recipe file: `name_or_path` itself when it exists, else the shipped recipe it names (`joint`,
    `joint.yaml` or `configs/joint.yaml`, so that the documented paths work from an installed package too)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = path.name.removesuffix(_RECIPE_SUFFIX)
    builtin = BUILTIN_RECIPES_DIR / f"{name}{_RECIPE_SUFFIX}"
    names_a_builtin = path.parent in (Path("."), Path("configs")) and path.suffix in ("", _RECIPE_SUFFIX)
    if names_a_builtin and builtin.is_file():
        return builtin
    raise FileNotFoundError(f"config: no recipe file at {path}, nor a built-in recipe of that name {builtin_recipes()}")


def read_recipe_file(path: str | os.PathLike, _chain: Sequence[Path] = ()) -> dict[str, Any]:
    """The mapping of a recipe file, with its `extends:` parents merged in (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config: no recipe file at {path}")
    if path.resolve() in _chain:
        raise ValueError(f"{EXTENDS_KEY}: recipes extend each other in a cycle: {[str(p) for p in _chain]}")
    try:
        recipe = yaml.load(path.read_text(encoding="utf-8"), Loader=_RecipeLoader) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"config: {path} is not a valid YAML file ({error})") from error
    if not isinstance(recipe, dict):
        raise TypeError(f"config: {path} must hold a mapping of keys, got {type(recipe).__name__}")
    parent = recipe.pop(EXTENDS_KEY, None)
    if parent is None:
        return recipe
    if not isinstance(parent, str):
        raise TypeError(f"{EXTENDS_KEY}: expected the path of the parent recipe (relative to {path}), got {parent!r}")
    base = read_recipe_file(path.parent / parent, (*_chain, path.resolve()))
    return merge_recipes(base, recipe)


def apply_overrides(recipe: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Returns a copy of `recipe` with `--a.b VALUE` / `--a.b=VALUE` pairs applied (dots descend into sections;
    the value `null` removes the key)."""
    result = copy.deepcopy(dict(recipe))
    tokens = list(overrides)
    while tokens:
        token = tokens.pop(0)
        if not token.startswith("--") or len(token) <= 2:
            raise ValueError(f"override: expected --section.key VALUE, got {token!r}")
        key, has_value, text = token[2:].partition("=")
        if not has_value:
            if not tokens:
                raise ValueError(f"override {token}: missing value")
            text = tokens.pop(0)
        _override(result, key.split("."), parse_value(text), token)
    return result


def _override(recipe: dict[str, Any], keys: Sequence[str], value: Any, token: str) -> None:
    """Sets `recipe[keys[0]]...[keys[-1]] = value`, creating sections on the way; `None` removes the key."""
    *sections, leaf = keys
    node = recipe
    for depth, section in enumerate(sections):
        if value is None and section not in node:
            return  # nothing to remove
        node = node.setdefault(section, {})
        if not isinstance(node, dict):
            raise TypeError(f"override {token}: {'.'.join(sections[: depth + 1])} is not a section")
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = value


def load_recipe(path: str | os.PathLike, overrides: Sequence[str] = (), stage: str | None = None) -> dict[str, Any]:
    """Reads a recipe file or built-in recipe (`resolve_recipe`, with its `extends:` parents), applies overrides and
    settles `stage` (the argument and the `stage:` key must agree). Returns the mapping; `parse_recipe` turns it into the stage's dataclass."""
    recipe = apply_overrides(read_recipe_file(resolve_recipe(path)), overrides)
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


def _import(target: str) -> Any:
    module_name, name = target.split(":")
    return getattr(importlib.import_module(module_name), name)


def parse_recipe(recipe: Mapping[str, Any]) -> Recipe:
    """The dataclass of the stage named by `recipe["stage"]`, built from the mapping (imports the stage's module)."""
    return _import(TRAINING_STAGES[recipe["stage"]].recipe_class).from_dict(recipe)


def run_recipe(recipe: Recipe) -> Any:
    """Runs the stage of a parsed recipe and returns its result."""
    return _import(TRAINING_STAGES[recipe.stage].run)(recipe)


# ------------------------------------------------------------------------------------------------ typed layer


def resolve_resume_checkpoint(resume: str | bool | None, output_dir: str | os.PathLike) -> str | bool | None:
    """`resume_from_checkpoint` for `Trainer.train`: `True` becomes the newest complete `checkpoint-N` folder of
    `output_dir` (one with trainer_state.json), with a warning naming each newer, half-written folder it skips;
    other values pass through. FileNotFoundError when `output_dir` holds no complete checkpoint."""
    if resume is not True:
        return resume
    folders = [path for path in Path(output_dir).glob("checkpoint-*") if _CHECKPOINT_DIR.fullmatch(path.name)]
    skipped = []
    for folder in sorted(folders, key=lambda path: int(_CHECKPOINT_DIR.fullmatch(path.name).group(1)), reverse=True):
        if (folder / _TRAINER_STATE_FILE).is_file():
            for partial in skipped:
                logger.warning(
                    "resume_from_checkpoint: skipping %s, it has no %s (half-written)", partial, _TRAINER_STATE_FILE
                )
            return str(folder)
        skipped.append(folder)
    incomplete = f"; incomplete: {[path.name for path in skipped]}" if skipped else ""
    raise FileNotFoundError(
        f"resume_from_checkpoint: no complete checkpoint (checkpoint-N with {_TRAINER_STATE_FILE}) in "
        f"{str(output_dir)!r}{incomplete}"
    )


def check_keys(
    given: Iterable[Any], allowed: Iterable[str], name: str, what: str = "keys", list_allowed: bool = True
) -> None:
    """ValueError naming the keys of `given` not in `allowed`, with the closest allowed key as a suggestion."""
    allowed = list(allowed)
    unknown = sorted(str(key) for key in given if key not in allowed)
    if not unknown:
        return
    close = {key: match[0] for key in unknown if (match := difflib.get_close_matches(key, allowed, n=1))}
    suggestion = ""
    if len(unknown) == 1 and close:
        suggestion = f" (did you mean {close[unknown[0]]!r}?)"
    elif close:
        suggestion = " (did you mean " + ", ".join(f"{match!r} for {key!r}" for key, match in close.items()) + "?)"
    expected = f"; expected some of {allowed}" if list_allowed else ""
    raise ValueError(f"{name}: unknown {what} {unknown}{suggestion}{expected}")


def check_fields(section: Mapping[str, Any], config_class: type, name: str) -> None:
    """The keys of a section passed to `config_class(**section)` must be fields of that dataclass (`OccVLAConfig`,
    `TrainingArguments`, ...): a typo fails here instead of becoming an attribute nothing reads."""
    allowed = [field.name for field in dataclasses.fields(config_class) if field.init]
    check_keys(section, allowed, name, what=f"{config_class.__name__} fields", list_allowed=False)


def check_training_arguments(section: Mapping[str, Any]) -> None:
    """The `training` section of a recipe: `TrainingArguments` fields, with the `output_dir` the checkpoint goes to."""
    from transformers import TrainingArguments  # only the stages (which load transformers anyway) parse sections

    check_fields(section, TrainingArguments, "training")
    if "output_dir" not in section:
        raise ValueError("training.output_dir: required, the checkpoint is written there")


def _section_class(hint: Any) -> type | None:
    """The dataclass a field's type names (`X` or `X | None`), if any."""
    arms = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    classes = [arm for arm in arms if isinstance(arm, type) and dataclasses.is_dataclass(arm)]
    return classes[0] if classes else None


def _matches(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a field type (scalars, unions, literals, lists/tuples, mappings, classes)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin is Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(item, arg) for item, arg in zip(value, args))
        return all(_matches(item, args[0]) for item in value) if args else True
    if origin in (dict, Mapping) or hint is dict:
        return isinstance(value, Mapping)
    return isinstance(hint, type) and isinstance(value, hint)


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if origin is Literal:
        return " or ".join(repr(arg) for arg in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join('...' if arg is Ellipsis else _describe(arg) for arg in args)}]"
    return getattr(hint, "__name__", str(hint))


def parse_section(cls: type[T], values: Mapping[str, Any] | T | None, path: str = "", name: str | None = None) -> T:
    """Builds the dataclass `cls` from a recipe section (a mapping; an instance passes through).

    Unknown keys fail with a suggestion; a value must fit its field's type; a missing or `null` key takes the
    field's default (a field without one fails as required, with its `metadata["help"]`); a field typed as a
    dataclass is parsed from its sub-section. `path` is the section's dotted name in error messages (`data` gives
    `data.source`), `name` names the section itself (default: `path`).
    """
    label = name or path or cls.__name__
    if values is None:
        values = {}
    if isinstance(values, cls):
        return values
    if not isinstance(values, Mapping):
        raise TypeError(f"{label}: expected a mapping of keys, got {type(values).__name__}")
    known = {field.name: field for field in dataclasses.fields(cls) if field.init}
    check_keys(values, known, label)
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, field in known.items():
        dotted = f"{path}.{key}" if path else key
        hint, value = hints[key], values.get(key)
        section = _section_class(hint)
        if value is None and not _matches(None, hint):
            if section is not None:
                value = {}  # an absent section: its own fields take their defaults or report as required
            elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                help_text = field.metadata.get("help")
                raise ValueError(f"{dotted}: required" + (f", {help_text}" if help_text else ""))
            else:
                continue
        if section is not None and value is not None:
            kwargs[key] = parse_section(section, value, dotted)
        elif _matches(value, hint):
            kwargs[key] = value
        else:
            raise TypeError(f"{dotted}: expected {_describe(hint)}, got {value!r}")
    return cls(**kwargs)


class Recipe:
    """Base of the stage recipes (dataclasses with a `stage` field): `from_dict` parses a loaded recipe mapping."""

    STAGE: ClassVar[str]
    stage: str

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | Self) -> Self:
        return parse_section(cls, values, name=f"{cls.STAGE} recipe")

    def __post_init__(self) -> None:
        if self.stage != self.STAGE:
            raise ValueError(f"stage: this recipe trains {self.STAGE!r}, got {self.stage!r}")


__all__ = [
    "BUILTIN_RECIPES_DIR",
    "TRAINING_STAGES",
    "Recipe",
    "TrainingStage",
    "apply_overrides",
    "builtin_recipes",
    "check_fields",
    "check_keys",
    "check_training_arguments",
    "load_recipe",
    "merge_recipes",
    "parse_recipe",
    "parse_section",
    "parse_value",
    "resolve_recipe",
    "read_recipe_file",
    "run_recipe",
]
