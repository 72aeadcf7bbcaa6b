"""Package discovery for the folder layout: `actors/`, `topology/`, … install as `disrouter.<folder>`.

The metadata lives in pyproject.toml. setuptools cannot discover packages under a renamed folder
from pyproject.toml alone, so the packages are found here: every subpackage (`actors/engines`,
`evaluation/methods`, any added later) goes into the wheel without being listed by hand.
tests/packaging/test_wheel.py checks the built wheel against the source tree.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
ROOTS = ("actors", "topology", "stack", "client", "gateway", "evaluation", "bench", "training", "examples")

packages = ["disrouter"]
package_dir = {"disrouter": "disrouter"}
for root in ROOTS:
    packages.append(f"disrouter.{root}")
    package_dir[f"disrouter.{root}"] = root  # subpackages resolve under it: actors/engines
    packages += [f"disrouter.{root}.{sub}" for sub in find_packages(str(HERE / root))]

setup(packages=packages, package_dir=package_dir)
