"""Versions of the libraries that produced an artifact, recorded beside it."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("alexnet-pipeline", "tensorflow-cpu", "tensorflow", "keras", "horovod", "numpy",
            "pillow", "scikit-learn", "dvc", "dvclive", "prefect")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
