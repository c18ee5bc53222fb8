"""The examples in the package's docstrings run and print what they say (``# doctest: +SKIP`` marks the ones
that need a trained model, a server or real data)."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import xraydet

ROOT = Path(xraydet.__file__).parent
# Every module file, namespace packages included (pkgutil.walk_packages skips folders without __init__.py).
MODULES = sorted(
    ".".join(("xraydet", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
    for path in ROOT.rglob("*.py")
)


def test_every_module_is_collected() -> None:
    assert {"xraydet.data.split", "xraydet.data.doctor", "xraydet.data.formats.coco"} <= set(MODULES)
    assert len(MODULES) == len(list(ROOT.rglob("*.py")))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed in {name}"
