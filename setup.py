"""Packaging that pyproject.toml cannot say: the four top-level folders the project requires
(build_configs/, engines/, evaluation/, flows/) install under ONE import namespace,
`enginesweep.<folder>`, so nothing generic (`flows`, `engines`, ...) lands at the top of
site-packages. `enginesweep` itself is an implicit namespace package: it has no folder of its own.
Everything else (metadata, dependencies, package data) is in pyproject.toml."""

from setuptools import find_packages, setup

FOLDERS = ("build_configs", "engines", "evaluation", "flows")

setup(
    packages=[f"enginesweep.{name}" for name in find_packages(include=[f"{f}*" for f in FOLDERS])],
    package_dir={f"enginesweep.{folder}": folder for folder in FOLDERS},
)
