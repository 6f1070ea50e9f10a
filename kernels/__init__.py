"""Kernels: plain NumPy references and the fast implementations checked against them.

This folder is installed as `tinygen.kernels` (see `package-dir` in pyproject.toml). An
unrelated PyPI package owns the bare name `kernels`, so importing this folder under that name
(for example from the repository root without installing tinygen) is refused.
"""

if __name__ != "tinygen.kernels":
    raise ImportError(
        f"this folder is tinygen's kernel package and must be imported as 'tinygen.kernels', "
        f"not as {__name__!r}; install the project first (pip install -e .) and import tinygen"
    )
