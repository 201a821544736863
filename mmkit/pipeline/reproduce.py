"""The reproduce pipeline: notebooks run by papermill in dependency order, skipping unchanged steps.

A step is one notebook with its parameters. Its key is a SHA-256 of the notebook file, its
parameters, the mmkit version and the keys of the steps it depends on; a step whose
``<runs>/<name>/done.json`` holds the same key (and whose outputs exist) is skipped. Independent
steps run in parallel (``jobs`` papermill kernels at a time), except exclusive ones (the runtime
measurement), which run alone.

Where results go (:func:`results_dir`): the committed results in ``reports/tables/`` and
``reports/figures/`` are those of ``make reproduce`` (:data:`COMMITTED_PRESET` on its own data and
encoders; its runs and executed notebooks in ``reports/runs/``, git-ignored). Any other preset, data
set or encoder writes ``reports/<data name>/<preset>/{runs,tables,figures}`` instead, a folder git
ignores (it holds a ``.gitignore``), so that no run ever overwrites the committed results unless its
``tables_dir``/``figures_dir`` are named explicitly. :func:`reproduced_runs` finds the runs a
reproduction trained on given data (the start notebook reuses them).

While it runs, :class:`LiveStatus` shows which steps are running, for how long, and what they
report through ``$MMKIT_PROGRESS_FILE`` (:data:`mmkit.data.embedded.build.PROGRESS_ENV`; the dataset step
reports the items it has rendered): one line redrawn in place on a terminal, a line every 30 s
otherwise. Each step's kernel gets its own progress file, ``<runs>/notebooks/<step>/progress.json``.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from mmkit.app.notebook import notebook_path, run_notebook
from mmkit.core.io import atomic_write_json
from mmkit.data.embedded.build import PROGRESS_ENV
from mmkit.vocab import VMF_METHODS

__all__ = ["Step", "PIPELINE_PRESETS", "COMMITTED_PRESET", "run_dir", "data_spec", "data_name", "results_dir",
           "ignore_folder", "output_dirs", "reproduced_runs", "plan", "step_key", "LiveStatus", "read_progress",
           "run_plan", "refresh_widget_screenshot"]

LAMBDA_SWEEP = (0.01, 0.1, 1.0, 10.0, 100.0)

#: Pipeline presets: data, seeds and training settings.
PIPELINE_PRESETS = {
    "quick": {"data": "small", "seeds": (0, 1, 2), "distance": "ssw",
              "train": {"epochs": 20, "batch_size": 128, "hidden": 256, "layers": 2},
              "runtime": {"repeats": 5, "steps": 2}, "sphere": {"epochs": 20}},
    "paper": {"data": "full", "seeds": (0, 1, 2, 3, 4), "distance": "ssw",
              "train": {"epochs": 40, "batch_size": 128, "hidden": 256, "layers": 2},
              "runtime": {"repeats": 10, "steps": 3}, "sphere": {"epochs": 40}},
    "smoke": {"data": "tiny", "seeds": (0,), "distance": "kl",
              "train": {"epochs": 2, "batch_size": 16, "hidden": 32, "layers": 1},
              "runtime": {"repeats": 2, "steps": 1, "batch": 8, "backbone_batch": 4},
              "sphere": {"epochs": 2, "max_items": 20, "n_samples": 5}},
}


def run_dir(runs_dir: str | os.PathLike, method: str, lambda_s: float, seed: int) -> Path:
    """Where the pipeline trains ``method`` at ``lambda_s`` with ``seed``: ``<runs_dir>/train/<tag>``."""
    return Path(runs_dir) / "train" / f"{method}-l{lambda_s:g}-s{seed}"


#: The preset whose results are committed under ``reports/`` (``make reproduce``), on its own data and encoders.
COMMITTED_PRESET = "quick"
# folder names under reports/ that hold committed material: another data set of that name gets "data-" before it
_RESERVED = ("runs", "tables", "figures", "study")


def _preset(preset: str) -> dict:
    if preset not in PIPELINE_PRESETS:
        raise ValueError(f"preset must be one of {tuple(PIPELINE_PRESETS)}, got {preset!r}")
    return PIPELINE_PRESETS[preset]


def data_spec(data: str | os.PathLike, base: str | os.PathLike | None = None) -> str:
    """A preset name as it is, a bundle directory as an absolute path (a relative one is read from ``base``,
    default the current directory), so that a run records its data valid from anywhere."""
    from mmkit.data.resolve import PRESETS

    path = Path(base or ".") / data
    if str(data) in PRESETS and not path.is_dir():
        return str(data)
    return str(path.resolve())


def data_name(data: str | os.PathLike) -> str:
    """The name of a data set: a preset's name, or a bundle directory's folder name."""
    spec = data_spec(data)
    return Path(spec).name if Path(spec).is_absolute() else spec


def results_dir(preset: str = COMMITTED_PRESET, data: str | os.PathLike | None = None, encoder: str | None = None,
                reports: str | os.PathLike = "reports") -> Path:
    """Where reproduce writes the runs, tables and figures of ``preset`` on ``data`` with ``encoder``.

    ``reports`` itself for the committed configuration (:data:`COMMITTED_PRESET` on its own data, heads);
    otherwise ``reports/<data name>/<preset>`` (``<preset>-backbones`` with backbone encoders; a data
    name that is a folder of committed material, such as ``tables``, becomes ``data-tables``).
    """
    cfg = _preset(preset)
    spec = data_spec(data or cfg["data"])
    own_encoder = encoder in (None, "heads")
    if preset == COMMITTED_PRESET and spec == cfg["data"] and own_encoder:
        return Path(reports)
    name = data_name(spec)
    folder = f"data-{name}" if name in _RESERVED else name
    return Path(reports) / folder / (preset if own_encoder else f"{preset}-{encoder}")


def ignore_folder(folder: str | os.PathLike) -> Path:
    """Make git ignore ``folder`` (created if missing) by a ``.gitignore`` in it that ignores everything."""
    path = Path(folder) / ".gitignore"
    if not path.is_file():
        from mmkit.core.io import atomic_write_text

        atomic_write_text(path, "# written by mmkit reproduce: results of data other than the committed ones\n*\n")
    return path


def output_dirs(preset: str = COMMITTED_PRESET, data: str | os.PathLike | None = None, encoder: str | None = None,
                reports: str | os.PathLike = "reports", **explicit: str | None) -> dict[str, str]:
    """``{"runs_dir", "tables_dir", "figures_dir"}`` of a reproduction: those given in ``explicit``
    (not None), else ``<results_dir>/runs|tables|figures``; a results folder other than ``reports``
    itself is made git-ignored (:func:`ignore_folder` on ``reports/<data name>``)."""
    unknown = sorted(set(explicit) - {"runs_dir", "tables_dir", "figures_dir"})
    if unknown:
        raise ValueError(f"output_dirs: unknown folders {unknown}")
    root = results_dir(preset, data, encoder, reports)
    if root != Path(reports):
        ignore_folder(root.parent)
    return {key: explicit.get(key) or str(root / key.removesuffix("_dir")) for key in ("runs_dir", "tables_dir",
                                                                                       "figures_dir")}


def reproduced_runs(data: str | os.PathLike = "", reports: str | os.PathLike = "reports") -> dict[str, str] | None:
    """The seed-0 Proposed (λ_S = 1) and Baseline runs that reproduce trained on ``data``, or None.

    ``data``: a preset or a bundle directory (relative to the current directory); empty: the data of
    the committed configuration. The results folder of every preset for that data is searched
    (:func:`results_dir`, the committed one first); a pair counts only when both runs have their
    best weights and record exactly ``data`` (as :attr:`mmkit.model.run.Run.data_spec`, valid from
    anywhere), so runs of another data set left in a folder are never taken for these.
    """
    from mmkit.model.run import CheckpointError, Run

    want = data_spec(data or PIPELINE_PRESETS[COMMITTED_PRESET]["data"])
    for preset in sorted(PIPELINE_PRESETS, key=lambda p: p != COMMITTED_PRESET):
        runs = results_dir(preset, want, reports=reports) / "runs"
        seed = PIPELINE_PRESETS[preset]["seeds"][0]
        pair = {"Proposed": run_dir(runs, "proposed", 1.0, seed), "Baseline": run_dir(runs, "baseline", 0.0, seed)}
        if not all((path / "best.pt").is_file() for path in pair.values()):
            continue
        try:
            recorded = {Run(path).data_spec for path in pair.values()}
        except CheckpointError:   # a run whose data cannot be found is not a run on `data`
            continue
        if recorded == {want}:
            return {name: str(path) for name, path in pair.items()}
    return None


@dataclass(frozen=True)
class Step:
    """One notebook run: ``after`` names the steps it needs; an ``exclusive`` step runs alone
    (nothing else in parallel: its timings are reported)."""

    name: str
    notebook: str
    parameters: dict = field(default_factory=dict)
    after: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    exclusive: bool = False


def plan(preset: str = "quick", data: str | None = None, runs_dir: str = "reports/runs",
         tables_dir: str = "reports/tables", figures_dir: str = "reports/figures", cache: str = "",
         encoder: str | None = None) -> list[Step]:
    """The steps of ``preset``.

    ``encoder`` ("heads" | "backbones") overrides the preset's encoders for every training run
    (``None``: the preset's; every preset trains heads over cached features by default).

    dataset -> every training run (Proposed at each λ_S, the limits 1e-12 and L_S only, Baseline,
    PCME, MPC; each seed) -> evaluate (Tables 2-4 from the main runs), ablation (Tables 8-10 from
    the λ_S runs), sphere (distributions on S^2 from the first Proposed run and a d = 3
    illustration model) and runtime (Table 1, alone).
    """
    cfg = _preset(preset)
    if encoder not in (None, "heads", "backbones"):
        raise ValueError(f"encoder must be None, 'heads' or 'backbones', got {encoder!r}")
    data = data_spec(data or cfg["data"])
    train = {**cfg["train"], **({"encoder": encoder} if encoder else {})}
    steps = [Step("dataset", "01_dataset.ipynb", {"data": data, "cache": cache, "n_show": 3})]
    main_runs, ablation_runs = [], []
    variants = [("baseline", 0.0), ("pcme", 1.0), ("mpc", 1.0), ("ls_only", float("inf"))]
    variants += [("proposed", lam) for lam in (1e-12, *LAMBDA_SWEEP)]
    for method, lam in variants:
        for seed in cfg["seeds"]:
            out = str(run_dir(runs_dir, method, lam, seed))
            tag = Path(out).name
            params = {"data": data, "cache": cache, "method": method, "seed": seed,
                      "lambda_s": 1.0 if lam == float("inf") else lam, "out": out, **train}
            steps.append(Step(f"train-{tag}", "02_train.ipynb", params, ("dataset",), (str(Path(out) / "best.pt"),)))
            if method in ("pcme", "mpc", "baseline") or (method == "proposed" and lam == 1.0):
                main_runs.append(out)
            if method in VMF_METHODS:
                ablation_runs.append(out)
    trained = tuple(s.name for s in steps if s.name.startswith("train-"))
    common = {"data": data, "cache": cache, "tables_dir": tables_dir, "figures_dir": figures_dir,
              "dataset_name": f"music21-{data}" if data in ("tiny", "small", "full") else data_name(data),
              "distance": cfg["distance"]}
    steps.append(Step("evaluate", "03_evaluate.ipynb", {"runs": json.dumps(main_runs), **common}, trained,
                      tuple(str(Path(tables_dir) / f"recall_{t}.csv") for t in ("image", "text", "audio"))))
    steps.append(Step("ablation", "04_ablation.ipynb", {"runs": json.dumps(ablation_runs), **common}, trained,
                      tuple(str(Path(tables_dir) / f"{t}.csv") for t in ("lambda_sweep", "lambda_limits"))))
    first_proposed = str(run_dir(runs_dir, "proposed", 1.0, cfg["seeds"][0]))
    steps.append(Step("sphere", "06_sphere.ipynb",
                      {"data": data, "cache": cache, "run": first_proposed, "figures_dir": figures_dir,
                       "illustration_out": str(Path(runs_dir) / "train" / "illustration-d3"), **cfg["sphere"]},
                      (f"train-{Path(first_proposed).name}",), (str(Path(figures_dir) / "sphere_projection.html"),)))
    steps.append(Step("runtime", "05_runtime.ipynb", {"tables_dir": tables_dir, "figures_dir": figures_dir,
                                                      **cfg["runtime"]},
                      trained, (str(Path(tables_dir) / "runtime.csv"),), exclusive=True))
    return steps


def step_key(step: Step, dependency_keys: list[str]) -> str:
    from mmkit import __version__

    h = hashlib.sha256()
    h.update(notebook_path(step.notebook).read_bytes())
    h.update(json.dumps(step.parameters, sort_keys=True, default=str).encode())
    h.update(__version__.encode())
    for k in dependency_keys:
        h.update(k.encode())
    return h.hexdigest()


def elapsed(seconds: float) -> str:
    """``42s``, ``3m05s`` or ``1h02m``."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def read_progress(path: str | os.PathLike) -> str | None:
    """What a step reports in its progress file (``rendering small: 812/2,160 items``), or None."""
    try:
        report = json.loads(Path(path).read_text())
        what, done, total = report["what"], report.get("done"), report.get("total")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if done is not None and total:
        return f"{what}: {done:,}/{total:,} {report.get('unit') or ''}".rstrip()
    return str(what)


class LiveStatus:
    """The running steps, their elapsed time and what they report, shown while a plan runs.

    On a terminal one status line is redrawn in place every ``interval`` seconds (default 1) and
    :meth:`log` prints finished steps above it; elsewhere (a log file, CI) the status is printed as
    a plain line every ``interval`` seconds (default 30). Use it as a context manager.
    """

    def __init__(self, stream=None, interval: float | None = None, clock=time.monotonic):
        self.stream = stream or sys.stdout
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.interval = interval if interval is not None else (1.0 if self.tty else 30.0)
        self.clock = clock
        self.running: dict[str, tuple[float, Path | None]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._drawn = False

    def start(self, name: str, progress_file: str | os.PathLike | None = None) -> None:
        with self._lock:
            self.running[name] = (self.clock(), Path(progress_file) if progress_file else None)

    def finish(self, name: str) -> float:
        """Stop showing ``name``; returns its elapsed seconds."""
        with self._lock:
            started, _ = self.running.pop(name, (self.clock(), None))
        return self.clock() - started

    def line(self) -> str:
        """``running: dataset 2m13s (rendering small: 812/2,160 items) · train-x 45s`` ('' when idle)."""
        with self._lock:
            running = dict(self.running)
        now = self.clock()
        parts = []
        for name, (started, path) in running.items():
            report = read_progress(path) if path else None
            parts.append(f"{name} {elapsed(now - started)}" + (f" ({report})" if report else ""))
        return "running: " + " · ".join(parts) if parts else ""

    def _clear(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False

    def draw(self) -> None:
        line = self.line()
        with self._lock:
            if not line:
                self._clear()
            elif self.tty:
                try:
                    width = os.get_terminal_size(self.stream.fileno()).columns
                except (AttributeError, OSError, ValueError):
                    width = 120
                self.stream.write("\r\x1b[K" + line[: max(20, width - 1)])
                self._drawn = True
            else:
                self.stream.write(line + "\n")
            self.stream.flush()

    def log(self, message: str) -> None:
        """Print ``message`` on its own line (above the status line on a terminal)."""
        with self._lock:
            self._clear()
            self.stream.write(f"{message}\n")
            self.stream.flush()
        if self.tty:
            self.draw()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.draw()
            except (OSError, ValueError):   # a closed or odd stream: stop showing, never stop the pipeline
                return

    def __enter__(self) -> "LiveStatus":
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="mmkit-live-status", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._clear()
            self.stream.flush()


def run_plan(steps: list[Step], runs_dir: str | os.PathLike = "reports/runs", jobs: int = 1, force: bool = False,
             log=print, live: LiveStatus | bool | None = None) -> dict[str, str]:
    """Execute ``steps`` (skipping unchanged ones); returns ``{step name: "ran" | "skipped"}``.

    ``log`` gets one line per finished step (``[3/35] train-proposed-l1-s0: ran in 1m12s``). ``live``:
    a :class:`LiveStatus` that shows the running steps, True for one on stdout, False for none;
    None (default) shows one when ``log`` is ``print`` (the command line).
    """
    runs_dir = Path(runs_dir)
    by_name = {s.name: s for s in steps}
    keys: dict[str, str] = {}
    status: dict[str, str] = {}
    pending = list(steps)
    if live is None:
        live = log is print
    if live is True:
        with LiveStatus() as shown:
            return run_plan(steps, runs_dir, jobs, force, log=shown.log, live=shown)
    live = live or None

    def execute(step: Step) -> tuple[str, float]:
        key = keys[step.name]
        folder = runs_dir / "notebooks" / step.name
        marker = folder / "done.json"
        if not force and marker.is_file() and json.loads(marker.read_text()).get("key") == key \
                and all(Path(o).exists() for o in step.outputs):
            return "skipped", 0.0
        progress = folder / "progress.json"
        progress.unlink(missing_ok=True)
        started = time.monotonic()
        if live is not None:
            live.start(step.name, progress)
        try:
            run_notebook(notebook_path(step.notebook), folder / step.notebook, step.parameters, progress=False,
                         env={PROGRESS_ENV: str(progress.resolve())})
        finally:
            if live is not None:
                live.finish(step.name)
        atomic_write_json(marker, {"key": key, "parameters": step.parameters})
        return "ran", time.monotonic() - started

    def report(step: Step, result: str, seconds: float) -> None:
        status[step.name] = result
        took = f" in {elapsed(seconds)}" if result == "ran" else ""
        log(f"[{len(status)}/{len(steps)}] {step.name}: {result}{took}" + (" (alone)" if step.exclusive else ""))

    while pending:
        ready = [s for s in pending if all(d in status for d in s.after)]
        if not ready:
            raise ValueError(f"steps with unknown or cyclic dependencies: {[s.name for s in pending]}")
        for s in ready:
            keys[s.name] = step_key(s, [keys[d] for d in s.after if d in by_name])
        shared = [s for s in ready if not s.exclusive]
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = {pool.submit(execute, s): s for s in shared}
            for future in as_completed(futures):
                report(futures[future], *future.result())
        for s in ready:
            if s.exclusive:  # alone: nothing else runs while it does
                report(s, *execute(s))
        pending = [s for s in pending if s.name not in status]
    return status


def refresh_widget_screenshot(preset: str = "quick", data: str | None = None, runs_dir: str = "reports/runs",
                              figures_dir: str = "reports/figures", cache: str = "", log=print) -> Path | None:
    """Screenshot of the retrieval demo (Proposed vs Baseline, first seed) in a real browser.

    Writes ``<figures_dir>/retrieval_widget.png`` unless it is newer than both runs' weights;
    returns its path, or ``None`` when no browser is available (logged: the tables do not depend on it).
    """
    from mmkit.app.browser import BrowserUnavailable, screenshot_retrieval_demo

    cfg = PIPELINE_PRESETS[preset]
    seed = cfg["seeds"][0]
    runs = {"Proposed": run_dir(runs_dir, "proposed", 1.0, seed), "Baseline": run_dir(runs_dir, "baseline", 0.0, seed)}
    out = Path(figures_dir) / "retrieval_widget.png"
    newest = max((r / "best.pt").stat().st_mtime for r in runs.values())
    if out.is_file() and out.stat().st_mtime > newest:
        log(f"{out}: up to date")
        return out
    try:
        screenshot_retrieval_demo({k: str(v) for k, v in runs.items()}, out, data=data or cfg["data"], cache=cache)
    except BrowserUnavailable as err:
        log(f"{out}: not refreshed ({err})")
        return None
    log(f"{out}: refreshed")
    return out
