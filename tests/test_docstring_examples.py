"""The examples in the package's docstrings run and print what they say (``# doctest: +SKIP`` marks the ones
that need a trained model, a server or real data)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import xraydet

MODULES = sorted(m.name for m in pkgutil.walk_packages(xraydet.__path__, "xraydet."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed in {name}"
