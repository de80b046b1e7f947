"""One installed namespace, `corral`, while the source folders stay at the top level (the design card's
layout): each folder is installed as `corral.<folder>`, so `pip install .` adds `corral` and nothing else
to site-packages. `corral` itself is a namespace package (no __init__.py). Everything else is in
pyproject.toml; only this mapping needs code, to list the sub-packages without repeating them by hand.
"""

from setuptools import find_packages, setup

FOLDERS = ("protos", "store", "service", "rest_shim")

setup(
    package_dir={f"corral.{folder}": folder for folder in FOLDERS},
    packages=[f"corral.{pkg}" for pkg in find_packages(include=[p for f in FOLDERS for p in (f, f + ".*")])],
    # The known chat templates (Go templates, their parameters, the reference Jinja templates).
    package_data={"corral.service.prompt.known": ["*.gotmpl", "*.json"]},
)
