"""The notebooks: where the shipped ones live, parameter validation and papermill execution.

The notebooks are package data of :mod:`mmkit` (``mmkit/notebooks/``, found through
``importlib.resources`` so an installed package runs them as a checkout does; in a checkout
``notebooks/`` links there). :func:`notebook_path` names one.

Papermill only *warns* about parameters a notebook does not declare, and injects values of any
type. :func:`run_notebook` checks every given parameter against the notebook's tagged
``parameters`` cell (names and annotated types, via ``papermill.inspect_notebook``) before
executing; :func:`check_parameters` repeats the type check inside the notebook, so a wrong type
injected by a bare ``papermill`` call stops the notebook at its first cell with a clear error.

Kernels are started by :func:`kernel_manager_class`: with CurveZMQ transport encryption, which the
ipykernel kernelspec declares, so the kernel no longer prints "Kernel is running over TCP without
encryption" at every start (ipykernel >= 7 warns when the manager provisions no keys); where pyzmq
lacks CURVE, over IPC sockets instead (POSIX), which do not warn either. A finished notebook's kernel is
shut down by request only, without the interrupt (SIGINT) jupyter_client sends first, which made a
kernel busy with a last message log "KeyboardInterrupt caught in kernel". Nothing else is silenced.
"""
from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import Mapping

__all__ = ["NOTEBOOKS", "WORKDIR_ENV", "notebook_path", "from_workdir", "ParameterError", "declared_parameters",
           "check_parameters", "kernel_manager_class", "run_notebook"]

#: The folder of the shipped notebooks (``mmkit/notebooks`` inside the installed package).
NOTEBOOKS = Path(str(files("mmkit") / "notebooks"))
#: Set by ``python -m mmkit lab`` (``make lab``) to the directory it was started from: a kernel runs in
#: the notebook's folder, but the notebooks' relative paths (runs, reports) mean the checkout.
WORKDIR_ENV = "MMKIT_WORKDIR"


def notebook_path(name: str) -> Path:
    """The shipped notebook ``name`` (e.g. ``"02_train.ipynb"``); a clear error if there is none."""
    path = NOTEBOOKS / name
    if not path.is_file():
        shipped = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
        raise FileNotFoundError(f"no notebook {name!r} in {NOTEBOOKS}; shipped: {shipped}")
    return path

def from_workdir(path: str | os.PathLike) -> Path:
    """``path`` itself when absolute, else relative to ``$MMKIT_WORKDIR`` (where ``make lab`` was started)
    or, without it, to the current directory (papermill's ``cwd``)."""
    path = Path(path)
    return path if path.is_absolute() else Path(os.environ.get(WORKDIR_ENV) or os.getcwd()) / path


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


def kernel_manager_class(env: Mapping[str, str] | None = None) -> type:
    """A jupyter_client ``AsyncKernelManager`` subclass for papermill (nbclient's default class, which
    then owns, starts and shuts down the kernel) whose kernels talk over encrypted CurveZMQ sockets
    (IPC sockets where pyzmq has no CURVE) and get ``env`` added to this process's environment.

    IPC sockets are files: they go to a private temporary folder (mode 0700), removed when the
    kernel shuts down, never to the working directory (jupyter_client's default place for them)."""
    import shutil
    import sys
    import tempfile

    from jupyter_client.manager import AsyncKernelManager

    extra = {str(k): str(v) for k, v in (env or {}).items()}

    class QuietKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self._ipc_dir = None
            try:
                self.transport_encryption = "auto"   # CurveZMQ keys provisioned by the manager (jupyter_client >= 8.8)
            except Exception:  # traitlets' TraitError: this pyzmq has no CURVE
                if sys.platform != "win32":
                    self.transport = "ipc"
                    self._ipc_dir = tempfile.mkdtemp(prefix="mmkit-kernel-")
                    self.ip = os.path.join(self._ipc_dir, "kernel-ipc")

        async def _async_cleanup_resources(self, restart: bool = False) -> None:
            await super()._async_cleanup_resources(restart=restart)
            if self._ipc_dir and not restart:
                shutil.rmtree(self._ipc_dir, ignore_errors=True)

        cleanup_resources = _async_cleanup_resources

        async def _async_interrupt_kernel(self) -> None:
            # jupyter_client interrupts (SIGINT) every kernel it shuts down, before asking it to shut down; a
            # kernel still inside a message handler then logs "[IPKernelApp] ERROR | KeyboardInterrupt caught in
            # kernel." at the end of a clean run. A finished notebook has nothing to interrupt: shut down by request.
            if not self.shutting_down:
                await super()._async_interrupt_kernel()

        interrupt_kernel = _async_interrupt_kernel

        async def start_kernel(self, **kw):
            kw["env"] = {**kw.get("env", os.environ), **extra}
            return await super().start_kernel(**kw)

    return QuietKernelManager


def run_notebook(notebook: str | os.PathLike, output: str | os.PathLike, parameters: Mapping | None = None,
                 cwd: str | os.PathLike | None = None, progress: bool = True,
                 env: Mapping[str, str] | None = None) -> Path:
    """Validate ``parameters`` against the notebook, then execute it with papermill into ``output``.

    ``env``: environment variables added for the notebook's kernel (e.g. where to report progress).
    """
    import papermill as pm

    declared = declared_parameters(notebook)
    for name, value in (parameters or {}).items():
        if name not in declared:
            raise ParameterError(f"{notebook}: unknown parameter {name!r}; it declares {sorted(declared)}")
        _check(name, value, declared[name], str(notebook))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(notebook), str(output), parameters=dict(parameters or {}), cwd=str(cwd) if cwd else None,
                        progress_bar=progress, kernel_name="python3", kernel_manager_class=kernel_manager_class(env))
    return output
