"""Self-contained checkpoint folders: every `save_pretrained` (and so every `push_to_hub`) of an OccVLA config, model
or processor writes the source code its classes need next to the weights, and an `auto_map` naming them, so that the
transformers Auto classes load the folder with `trust_remote_code=True` where this package is not installed.

transformers' own mechanism (`register_for_auto_class`, then `custom_object_save` at save time) copies a module and
its `from .x import` siblings verbatim; our modules also import the package root (`from ..constants import`), which
it cannot follow. `RemoteCodeMixin` writes the folder instead: the import closure of the classes' modules, flattened
into one folder (each relative import becomes `from .x import`). A folder loaded that way gets its classes registered
by transformers, and re-saves through the stock mechanism and this mixin alike (its code is already flat).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

# `from .x import` (the module's folder) and `from ..x import` (its parent); both become `from .x import`.
_RELATIVE_IMPORT = re.compile(r"^(\s*from\s+)(\.{1,2})(\w+)(\s+import\b)", re.MULTILINE)
_ANY_RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.+[\w.]*\s+import\b", re.MULTILINE)
# `save_pretrained(push_to_hub=True, ...)` keywords for `push_to_hub` only, and those both take.
_PUSH_ONLY_KEYWORDS: tuple[str, ...] = ("commit_message", "commit_description", "private", "revision", "create_pr")
_SHARED_KEYWORDS: tuple[str, ...] = ("token", "max_shard_size")


def code_closure(module_file: Path) -> dict[str, str]:
    """File name -> source text of `module_file` and of every module it imports relatively (recursively), with each
    relative import rewritten for one flat folder. Raises on an import the flat folder cannot express
    (`from . import x`, `from .a.b import`, three dots) or on two modules of one name."""
    sources: dict[str, str] = {}
    origins: dict[str, Path] = {}
    pending = [module_file.resolve()]
    while pending:
        path = pending.pop()
        if path.name in origins:
            if origins[path.name] != path:
                raise ValueError(f"remote code: {origins[path.name]} and {path} would share the name {path.name}")
            continue
        text = path.read_text(encoding="utf-8")
        flat_imports = list(_RELATIVE_IMPORT.finditer(text))
        if len(flat_imports) != len(_ANY_RELATIVE_IMPORT.findall(text)):
            raise ValueError(f"remote code: {path} has a relative import other than `from .x` / `from ..x import`")
        for match in flat_imports:
            folder = path.parent if match.group(2) == "." else path.parent.parent
            pending.append(folder / f"{match.group(3)}.py")
        origins[path.name] = path
        sources[path.name] = _RELATIVE_IMPORT.sub(r"\1.\3\4", text)
    return sources


class RemoteCodeMixin:
    """Makes `save_pretrained` write the code of `_auto_classes()` and their `auto_map` entries (put it first among
    the bases of a config, model or processor class)."""

    # Whether the `auto_map` stays on the owner after saving: a loaded config keeps its `auto_map`, a loaded
    # processor has none (`from_pretrained` drops it), and a saved object should equal what loading it gives.
    _auto_map_persists: bool = True

    @classmethod
    def _auto_classes(cls) -> dict[str, type]:
        """Auto class name (`"AutoConfig"`, `"AutoModel"`, ...) -> the class of ours it resolves to."""
        raise NotImplementedError

    def _auto_map_owner(self) -> Any:
        """The object whose `auto_map` attribute the class's `save_pretrained` writes (a model: its config)."""
        return self

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any) -> Any:
        """The class's `save_pretrained` plus the code and `auto_map`; with `push_to_hub=True`, then
        `push_to_hub(repo_id, ...)` (which saves a fresh copy through this method and uploads all of it)."""
        auto_classes = self._auto_classes()
        owner = self._auto_map_owner()
        previous = getattr(owner, "auto_map", None)
        entries = {auto: f"{Path(_module_file(cls)).stem}.{cls.__name__}" for auto, cls in auto_classes.items()}
        if push_to_hub:
            repo_id = kwargs.pop("repo_id", Path(save_directory).name)
            push_kwargs = {key: kwargs.pop(key) for key in _PUSH_ONLY_KEYWORDS if key in kwargs}
            push_kwargs.update({key: kwargs[key] for key in _SHARED_KEYWORDS if key in kwargs})
        owner.auto_map = {**(previous or {}), **entries}
        try:
            result = super().save_pretrained(save_directory, **kwargs)
        finally:
            if not self._auto_map_persists:
                vars(owner).pop("auto_map")
                if previous is not None:
                    owner.auto_map = previous
        if kwargs.get("is_main_process", True):
            for module_file in dict.fromkeys(_module_file(cls) for cls in auto_classes.values()):
                for name, source in code_closure(Path(module_file)).items():
                    (Path(save_directory) / name).write_text(source, encoding="utf-8")
        if push_to_hub:
            self.push_to_hub(repo_id, **push_kwargs)
        return result


def _module_file(cls: type) -> str:
    return sys.modules[cls.__module__].__file__
