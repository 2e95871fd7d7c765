"""The README's "Use" example runs as printed (embedded model, a sim sample) and prints what its comments say."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def use_example() -> str:
    """The first python block after the README's "## Use" heading."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## Use\n+```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert match, "README.md: no python block under '## Use'"
    return match.group(1)


def test_the_readme_use_example_runs_and_prints_what_it_says() -> None:
    code = use_example()
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), namespace)
    plan = namespace["plan"]
    assert plan.trajectory.shape == (1, 6, 2) and torch.isfinite(plan.trajectory).all()
    # Each print's comment starts with what it prints (a list of texts).
    claimed = re.findall(r"^print\(.*\)\s+# (\[[^\]]*\])", code, re.MULTILINE)
    assert len(claimed) == 2, claimed
    assert str(plan.meta_action) == claimed[0]
    assert printed.getvalue().splitlines()[-1] == claimed[1]
