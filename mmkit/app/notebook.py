"""The notebooks: where the shipped ones live, parameter validation and papermill execution.

The notebooks are package data of :mod:`mmkit` (``mmkit/notebooks/``, found through
``importlib.resources`` so an installed package runs them as a checkout does; in a checkout
``notebooks/`` links there). :func:`notebook_path` names one.

Papermill only *warns* about parameters a notebook does not declare, and injects values of any
type. :func:`run_notebook` checks every given parameter against the notebook's tagged
``parameters`` cell (names and annotated types, via ``papermill.inspect_notebook``) before
executing; :func:`check_parameters` repeats the type check inside the notebook, so a wrong type
injected by a bare ``papermill`` call stops the notebook at its first cell with a clear error.
"""
from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import Mapping

__all__ = ["NOTEBOOKS", "notebook_path", "ParameterError", "declared_parameters", "check_parameters", "run_notebook"]

#: The folder of the shipped notebooks (``mmkit/notebooks`` inside the installed package).
NOTEBOOKS = Path(str(files("mmkit") / "notebooks"))


def notebook_path(name: str) -> Path:
    """The shipped notebook ``name`` (e.g. ``"02_train.ipynb"``); a clear error if there is none."""
    path = NOTEBOOKS / name
    if not path.is_file():
        shipped = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
        raise FileNotFoundError(f"no notebook {name!r} in {NOTEBOOKS}; shipped: {shipped}")
    return path

_TYPES = {"str": str, "int": int, "float": (int, float), "bool": bool}


class ParameterError(ValueError):
    """An unknown notebook parameter, or a value of the wrong type."""


def declared_parameters(notebook: str | os.PathLike) -> dict[str, str]:
    """``{name: annotated type name}`` of the notebook's ``parameters`` cell."""
    import papermill as pm

    return {name: info["inferred_type_name"] for name, info in pm.inspect_notebook(str(notebook)).items()}


def _check(name: str, value, type_name: str, where: str) -> None:
    expected = _TYPES.get(type_name)
    if expected is None:
        return
    if type_name in ("int", "float") and isinstance(value, bool) or not isinstance(value, expected):
        raise ParameterError(f"{where}: parameter {name!r} must be {type_name}, got {type(value).__name__} {value!r}")


def check_parameters(namespace: Mapping, spec: Mapping[str, str]) -> None:
    """Inside a notebook: check the types of the parameters ``spec`` names (``{name: "int", ...}``)."""
    for name, type_name in spec.items():
        if name not in namespace:
            raise ParameterError(f"parameter {name!r} ({type_name}) is not defined")
        _check(name, namespace[name], type_name, "notebook")


def run_notebook(notebook: str | os.PathLike, output: str | os.PathLike, parameters: Mapping | None = None,
                 cwd: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Validate ``parameters`` against the notebook, then execute it with papermill into ``output``."""
    import papermill as pm

    declared = declared_parameters(notebook)
    for name, value in (parameters or {}).items():
        if name not in declared:
            raise ParameterError(f"{notebook}: unknown parameter {name!r}; it declares {sorted(declared)}")
        _check(name, value, declared[name], str(notebook))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(notebook), str(output), parameters=dict(parameters or {}), cwd=str(cwd) if cwd else None,
                        progress_bar=progress, kernel_name="python3")
    return output
