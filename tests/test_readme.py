"""The README's and the docs' examples must work as written.

Every ```python block of the README runs on its own; the blocks of a page in docs/ run in order
in one namespace, as a reader goes through the page.
"""

import glob
import os
import re

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
README = os.path.join(ROOT, "README.md")
DOCS = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def python_blocks(path=README):
    with open(path, encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def test_readme_has_examples():
    assert python_blocks(), "README.md shows no python example"


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_example_runs(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # examples may write files (a checkpoint)
    exec(compile(python_blocks()[index], f"README.md block {index}", "exec"), {"__name__": "__readme__"})


@pytest.mark.parametrize("page", [p for p in DOCS if python_blocks(p)], ids=os.path.basename)
def test_docs_examples_run(page, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TINYGEN_CACHE", str(tmp_path / "cache"))  # pages may set it; never the user's cache
    namespace = {"__name__": "__docs__"}
    for index, block in enumerate(python_blocks(page)):
        exec(compile(block, f"{os.path.basename(page)} block {index}", "exec"), namespace)
