"""The code runs on Python 3.8: the syntax, and the 3.9+ APIs it must avoid."""

import ast
import os
import re

import pytest
from helpers import ROOT

# Everything that ships: the wheel's modules (see test_package.py).
SOURCES = ["logoff.py", "wtsapi.py"]

# Calls and names that exist only in newer Pythons (ast cannot see these).
NEWER = [r"\.removeprefix\(", r"\.removesuffix\(", r"\bzoneinfo\b",
         r"\bgraphlib\b", r"functools\.cache\b", r"\bmath\.lcm\b",
         r"\.is_relative_to\(", r"\bint\.bit_count\b",
         r"asyncio\.to_thread", r"\bTypeAlias\b", r"\bParamSpec\b"]


def test_the_sources_are_the_two_modules():
    """logoff.py is the whole CLI: no private implementation module."""
    for name in SOURCES:
        assert os.path.isfile(os.path.join(ROOT, name)), name
    assert not os.path.exists(os.path.join(ROOT, "_logoff.py"))


@pytest.mark.parametrize("name", SOURCES)
def test_parses_as_python_38(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        source = f.read()
    ast.parse(source, name, feature_version=(3, 8))


@pytest.mark.parametrize("name", SOURCES)
def test_no_newer_apis(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        source = f.read()
    for pattern in NEWER:
        assert not re.search(pattern, source), (name, pattern)
    tree = ast.parse(source)
    for node in ast.walk(tree):
        # X | Y as a type at run time (annotations aside) needs 3.10.
        assert not isinstance(node, getattr(ast, "Match", ())), name
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert not any(
                isinstance(a.annotation, ast.BinOp)
                for a in node.args.args + node.args.kwonlyargs
                if a.annotation is not None), (name, node.name)


def test_standard_library_only():
    import sys
    stdlib = set(getattr(sys, "stdlib_module_names", ())) or None
    for name in SOURCES:
        with open(os.path.join(ROOT, name), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                mods = [node.module]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                if top in ("wtsapi", "logoff"):
                    continue
                if stdlib is not None:
                    assert top in stdlib, (name, mod)
