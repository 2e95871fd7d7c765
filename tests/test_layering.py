"""Data flows one way: an AST check of every import in the package (module level and inside functions).

dataset -> processor -> model -> trainer -> evaluation: `data/` and `sim/` never import the processor, the model or
anything after them (nor the package root, whose public names load the model); `sim/` never imports `data/`; the
processor never imports the model; the leaf modules import only `constants` (the class labels also `meta_action`,
whose texts they name; the reasoning annotations also the leaves below them, `geometry`, `meta_action` and
`class_labels`); and no package module imports `benchmarks/` (which only
measures and prints) or `tests/`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "occvla_hf"
DOWNSTREAM_OF_DATA = (
    "occvla_hf.processing",
    "occvla_hf.modeling",
    "occvla_hf.training",
    "occvla_hf.evaluation",
    "occvla_hf.demo",
    "occvla_hf.demo_cli",
    "occvla_hf.pretrained",
    "occvla_hf.cli",
    "occvla_hf.pipelines",
)
# package -> what its modules must not import (a name covers its submodules, except "occvla_hf": the root alone)
RULES: dict[str, tuple[str, ...]] = {
    "occvla_hf": ("benchmarks", "tests"),
    "occvla_hf.data": ("occvla_hf", *DOWNSTREAM_OF_DATA),
    "occvla_hf.sim": ("occvla_hf", "occvla_hf.data", *DOWNSTREAM_OF_DATA),
    "occvla_hf.processing": ("occvla_hf", "occvla_hf.modeling", "occvla_hf.training", "occvla_hf.evaluation"),
}
LEAF_MODULES: tuple[str, ...] = (
    "occvla_hf.constants",
    "occvla_hf.version",
    "occvla_hf.geometry",
    "occvla_hf.meta_action",
    "occvla_hf.class_labels",
    "occvla_hf.reasoning",
    "occvla_hf.remote_code",
)
LEAF_MAY_IMPORT: tuple[str, ...] = ("occvla_hf.constants",)
LEAF_EXTRA_IMPORTS: dict[str, tuple[str, ...]] = {
    "occvla_hf.class_labels": ("occvla_hf.meta_action",),
    "occvla_hf.reasoning": ("occvla_hf.geometry", "occvla_hf.meta_action", "occvla_hf.class_labels"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package_module(name: str) -> bool:
    path = PACKAGE_DIR.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(source: str, module: str, is_package: bool) -> list[str]:
    """Every module `source` (the text of `module`) imports, relative imports resolved; `from pkg import name`
    counts as `pkg.name` when that is a module of the package and as `pkg` otherwise."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".") if is_package else module.split(".")[:-1]
                anchor = parent[: len(parent) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.append(candidate if _is_package_module(candidate) else base)
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _forbidden(name: str, forbidden: str) -> bool:
    return name == forbidden if forbidden == "occvla_hf" else _within(name, forbidden)


def violations(module: str, imports: list[str]) -> list[str]:
    """`module imports target` lines for every import a rule forbids."""
    out = []
    for package, forbidden in RULES.items():
        if _within(module, package):
            out += [f"{module} imports {name}" for name in imports if any(_forbidden(name, f) for f in forbidden)]
    if module in LEAF_MODULES:
        allowed = LEAF_MAY_IMPORT + LEAF_EXTRA_IMPORTS.get(module, ())
        out += [
            f"{module} (a leaf) imports {name}"
            for name in imports
            if name.split(".")[0] == "occvla_hf" and name not in allowed
        ]
    return out


def test_package_imports_follow_the_data_flow() -> None:
    problems = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        module = _module_name(path)
        imports = imported_modules(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")
        problems += violations(module, imports)
    assert not problems, "imports against the data flow:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("occvla_hf.data.hub", "from occvla_hf.processing.processing_occvla import X", "occvla_hf.processing"),
        ("occvla_hf.data.hub", "def f():\n    from ..modeling import OccVLAConfig", "occvla_hf.modeling"),
        ("occvla_hf.data.hub", "from occvla_hf import __version__", "occvla_hf"),
        ("occvla_hf.sim.qa", "from occvla_hf.data.nuscenes_qa import Question", "occvla_hf.data"),
        ("occvla_hf.sim.qa", "from .. import data", "occvla_hf.data"),
        ("occvla_hf.processing", "from ..modeling.configuration_occvla import C", "occvla_hf.modeling"),
        ("occvla_hf.evaluation.cli", "import benchmarks.ablation_occupancy", "benchmarks"),
        ("occvla_hf.meta_action", "from .processing import tokenization", "occvla_hf.processing"),
        ("occvla_hf.meta_action", "from .geometry import wrap_angle", "occvla_hf.geometry"),
        ("occvla_hf.reasoning", "from .sim.layout import World", "occvla_hf.sim"),
        ("occvla_hf.reasoning", "from occvla_hf.data.hub import agent_boxes_arrays", "occvla_hf.data"),
    ],
)
def test_the_check_catches_each_kind_of_violation(module: str, source: str, expected: str) -> None:
    is_package = module == "occvla_hf.processing"
    problems = violations(module, imported_modules(source, module, is_package))
    assert any(problem.endswith(f"imports {expected}") or f"imports {expected}." in problem for problem in problems)


def test_allowed_imports_pass() -> None:
    source = "from occvla_hf.constants import CAMERA_NAMES\nfrom occvla_hf.geometry import wrap_angle\nfrom . import qa"
    assert violations("occvla_hf.sim.generate", imported_modules(source, "occvla_hf.sim.generate", False)) == []
    source = "from .constants import BOX_FIELDS\nfrom .geometry import wrap_angle\nfrom .meta_action import MetaAction"
    assert violations("occvla_hf.reasoning", imported_modules(source, "occvla_hf.reasoning", False)) == []
