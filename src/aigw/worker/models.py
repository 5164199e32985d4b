"""Finding a model's files on this machine; nothing is ever downloaded.

A model spec is a local directory, or the name of an installed package that ships one
(its ``get_model_path()``, else the ``model/`` folder inside it).
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path


class ModelFilesNotFound(FileNotFoundError):
    """A model spec names neither a local directory nor a package that ships a model."""


def resolve_path(spec: str) -> Path:
    """The local directory holding the model named by ``spec``."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    module_name = spec.replace("-", "_")  # a distribution name works too
    if not all(part.isidentifier() for part in module_name.split(".")):
        raise ModelFilesNotFound(
            f"model {spec!r}: no such directory (models are never downloaded; give a local "
            "directory or an installed package that ships the model)"
        )
    return _package_model_dir(spec, module_name)


def _package_model_dir(spec: str, module_name: str) -> Path:
    try:
        found = importlib.util.find_spec(module_name)
    except ImportError:  # a parent package of a dotted name is missing
        found = None
    if found is None:
        raise ModelFilesNotFound(
            f"model {spec!r}: neither a directory nor an installed package (models are "
            "never downloaded)"
        )
    module = importlib.import_module(module_name)
    getter = getattr(module, "get_model_path", None)
    locations = list(found.submodule_search_locations or [])
    if callable(getter):
        folder: Path | None = Path(getter())
    else:
        folder = Path(locations[0]) / "model" if locations else None
    if folder is None or not folder.is_dir():
        raise ModelFilesNotFound(f"model {spec!r}: package {module_name} has no model folder")
    return folder.resolve()
