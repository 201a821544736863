"""Deterministic fault injection for the reliability suite; a dictionary lookup when unset.

Set ``MMKIT_FAULT`` to one fault, or several separated by ``;``, each ``<point>:<key>=<value>:...``:

``write:file=<glob>:after-bytes=<n>[:nth=<k>][:action=<a>]``
    In :func:`mmkit.core.io.atomic_write`: during this process's ``k``-th write (default 1st) to a
    file whose name matches ``glob`` (``fnmatch``, e.g. ``ckpt-epoch*.pt``), once ``n`` bytes of
    the temporary file are flushed to disk (a shorter file is written whole).
``step:after=<k>[:action=<a>]``
    In :func:`mmkit.training.loop.fit`: right after this process's ``k``-th optimizer step.

Actions: ``kill`` (default): ``SIGKILL`` to the process itself, exactly like ``kill -9`` (no
``finally``, no ``atexit``, no flushing); ``stop``: ``SIGSTOP``, so that a test can ``kill -9``
the process from outside at a known point; ``raise``: ``OSError(ENOSPC)``, a full disk.
Example: ``MMKIT_FAULT="write:file=ckpt-epoch*.pt:after-bytes=4096:nth=2" python -m mmkit train ...``
dies half-way through writing its second checkpoint. POSIX only (signals).
"""
from __future__ import annotations

import errno
import fnmatch
import os
import signal
from functools import lru_cache
from pathlib import Path
from typing import IO

__all__ = ["ENV", "parse", "reset", "wrap_file", "after_step"]

ENV = "MMKIT_FAULT"
_ACTIONS = ("kill", "stop", "raise")
_KEYS = {"write": ({"file", "after-bytes"}, {"nth", "action"}), "step": ({"after"}, {"action"})}
_counts: dict[tuple[str, int], int] = {}


@lru_cache(maxsize=16)
def parse(spec: str) -> tuple[tuple[str, dict], ...]:
    """``MMKIT_FAULT`` text -> ``((point, options), ...)``; a ``ValueError`` names the bad part."""
    faults = []
    for item in filter(None, (part.strip() for part in spec.split(";"))):
        point, *pairs = item.split(":")
        if point not in _KEYS:
            raise ValueError(f"{ENV}: fault {item!r}: point must be one of {sorted(_KEYS)}, got {point!r}")
        options = dict(pair.partition("=")[::2] for pair in pairs)
        required, optional = _KEYS[point]
        if not required <= set(options) <= required | optional:
            raise ValueError(f"{ENV}: fault {item!r}: needs keys {sorted(required)} (optional {sorted(optional)}), "
                             f"got {sorted(options)}")
        options.setdefault("action", "kill")
        if point == "write":
            options.setdefault("nth", "1")
        if options["action"] not in _ACTIONS:
            raise ValueError(f"{ENV}: fault {item!r}: action must be one of {_ACTIONS}, got {options['action']!r}")
        for key in ("after-bytes", "nth", "after"):
            if key in options:
                if not options[key].isdigit() or (key != "after-bytes" and int(options[key]) < 1):
                    raise ValueError(f"{ENV}: fault {item!r}: {key} must be an int >= {0 if key == 'after-bytes' else 1}, "
                                     f"got {options[key]!r}")
                options[key] = int(options[key])
        faults.append((point, options))
    return tuple(faults)


def reset() -> None:
    """Forget how often each fault point was reached (tests that reuse a spec in one process)."""
    _counts.clear()


def _due(point: str, name: str | None = None) -> dict | None:
    """Count this arrival at ``point`` for every matching fault; the fault due now, if any."""
    spec = os.environ.get(ENV)
    if not spec:
        return None
    due = None
    for i, (kind, options) in enumerate(parse(spec)):
        if kind != point or (name is not None and not fnmatch.fnmatch(name, options["file"])):
            continue
        key = (spec, i)
        _counts[key] = _counts.get(key, 0) + 1
        if _counts[key] == options["nth" if point == "write" else "after"] and due is None:
            due = options
    return due


def _fire(action: str, where: str) -> None:
    if action == "raise":
        raise OSError(errno.ENOSPC, f"injected fault ({ENV}) at {where}: no space left on device")
    os.kill(os.getpid(), signal.SIGKILL if action == "kill" else signal.SIGSTOP)


class _FaultyFile:
    """A binary file that fires its fault once ``limit`` bytes are written and on disk."""

    def __init__(self, fh: IO[bytes], limit: int, action: str, where: str):
        self._fh, self._limit, self._action, self._where, self._written = fh, limit, action, where, 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        room = self._limit - self._written
        if room < 0 or len(view) < room:
            self._written += len(view)
            return self._fh.write(view)
        self._fh.write(view[:room])
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._written = self._limit + 1  # fire once; "stop" continues after SIGCONT
        _fire(self._action, f"{self._where} after {self._limit} bytes")
        return room + self._fh.write(view[room:])

    def __getattr__(self, name):
        return getattr(self._fh, name)


def wrap_file(path: str | os.PathLike, fh: IO[bytes]) -> IO[bytes]:
    """``fh`` itself, or a wrapper that fires the ``write`` fault due for ``path`` (atomic_write)."""
    options = _due("write", Path(path).name)
    if options is None:
        return fh
    return _FaultyFile(fh, options["after-bytes"], options["action"], f"write of {Path(path).name}")


def after_step() -> None:
    """Fire the ``step`` fault due after this optimizer step (called by the trainer)."""
    options = _due("step")
    if options is not None:
        _fire(options["action"], f"step {options['after']}")
