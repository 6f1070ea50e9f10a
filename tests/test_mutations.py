"""`benchmarks.mutations`: every known bug of its list still applies to the tree (so the list cannot
rot silently), a stale one stops the script naming it, and a copy of the tree imports its own code."""

import os
import subprocess
import sys

import pytest

from benchmarks import mutations
from benchmarks.mutations import MUTATIONS, Mutation


def test_every_mutation_applies_exactly_once_to_the_tree():
    mutations.check(mutations.ROOT, MUTATIONS)
    assert len({m.name for m in MUTATIONS}) == len(MUTATIONS)
    for m in MUTATIONS:
        assert m.new != m.old and m.bug, m.name
        files = [t for t in m.tests if t.startswith("tests/")]
        assert files and all(os.path.isfile(os.path.join(mutations.ROOT, f)) for f in files), m.name


def test_a_stale_mutation_stops_the_script_naming_it(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\ny = x + x\n")
    good = Mutation("fine", "a.py", "x = 1", "x = 2", ("tests/t.py",))
    mutations.check(str(tmp_path), [good])
    for bad, count in ((Mutation("gone", "a.py", "z = 3", "z = 4", ()), "0 times"),
                       (Mutation("twice", "a.py", "x", "w", ()), "3 times"),
                       (Mutation("nofile", "b.py", "x", "w", ()), "does not exist")):
        with pytest.raises(SystemExit, match=rf"{bad.name}: .*{count}"):
            mutations.check(str(tmp_path), [good, bad])


def test_the_copy_of_the_tree_imports_its_own_tinygen_and_kernels(tmp_path):
    if subprocess.run(["git", "-C", mutations.ROOT, "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout: the copy lists the tree's files with git ls-files")
    tree = mutations.copy_tree(mutations.ROOT, str(tmp_path / "tree"))
    assert os.path.isfile(os.path.join(tree, "benchmarks", "mutations.py"))
    mutations.check_imports(sys.executable, tree)  # tinygen and tinygen.kernels both from the copy
    with pytest.raises(SystemExit, match="not the copy's modules"):
        mutations.check_imports(sys.executable, str(tmp_path))  # no tinygen there: the installed one is imported


def test_a_run_is_caught_survived_or_not_run(tmp_path):
    (tmp_path / "t_pass.py").write_text("def test_a():\n    assert 1 + 1 == 2\n")
    (tmp_path / "t_fail.py").write_text("def test_a():\n    pass\n\ndef test_b():\n    assert 1 + 1 == 3\n")
    (tmp_path / "t_skip.py").write_text("import pytest\n\n@pytest.mark.skip\ndef test_a():\n    pass\n")
    runs = {name: mutations.run_tests(sys.executable, str(tmp_path), (f"{name}.py",), (), 300)
            for name in ("t_pass", "t_fail", "t_skip")}
    assert runs["t_pass"][:4] == ("survived", 1, 0, "")
    assert runs["t_fail"][:4] == ("caught", 2, 0, "t_fail::test_b")
    assert runs["t_skip"][:4] == ("not run", 0, 1, "")
