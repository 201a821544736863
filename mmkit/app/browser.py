"""JupyterLab for people and for tests: the one command line ``make lab`` runs, and the notebooks
driven in a real browser (JupyterLab headless + Playwright + Debian chromium).

:func:`lab_command` builds the JupyterLab command line; ``python -m mmkit lab`` (``make lab``) runs
it through :func:`start_lab` after :func:`prepare_lab` (the kernel "mmkit" registered in this
environment, the ipywidgets extension checked enabled) and :func:`working_copy`: the lab serves a
git-ignored working copy of the shipped notebooks (``my-notebooks/``, :data:`LAB_DIR`), never the
package's own folder, so that running and saving a notebook leaves the package untouched. The
working copy also holds the kit's JupyterLab defaults (:data:`LAB_DEFAULTS`: no news toast, no
update check), as JupyterLab's ``overrides.json`` in ``my-notebooks/.jupyterlab/`` (the lab's
``app_settings_dir``): the user's own JupyterLab settings are neither read nor written for them.
:func:`jupyterlab_server` starts the
very same ``python -m mmkit lab`` for ``tests/test_browser.py`` and for
:func:`screenshot_retrieval_demo` (the README figure).
Nothing is downloaded: the browser is the system chromium (``apt-get install chromium``; another
binary can be named with ``$MMKIT_CHROMIUM``), driven through the ``playwright`` Python package
(never ``playwright install``).

>>> with demo_page(runs={"Proposed": "runs/p", "Baseline": "runs/b"}, data="small") as demo:
...     demo.search("audio", "jig")                    # type into the audio search box, Enter
...     demo.set_target("audio")                       # choose the target modality
...     demo.state("Proposed")["ids"]                  # the ids the browser shows, best first
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from mmkit.app.notebook import WORKDIR_ENV, ParameterError, check_parameters, declared_parameters, notebook_path
from mmkit.core.io import atomic_write_bytes, atomic_write_text

__all__ = ["CHROMIUM_ARGS", "DEMO_NOTEBOOK", "START_NOTEBOOK", "KERNEL_NAME", "WIDGETS_EXTENSION", "LAB_DIR",
           "LAB_DEFAULTS", "BrowserUnavailable", "LabSetupError", "lab_command", "register_kernel", "widgets_extension",
           "prepare_lab", "working_copy", "start_lab", "find_browser", "write_parameterized_notebook",
           "jupyterlab_server", "chromium_page", "DemoPage", "demo_page", "start_here_page",
           "screenshot_retrieval_demo"]

DEMO_NOTEBOOK = notebook_path("07_retrieval_demo.ipynb")
START_NOTEBOOK = notebook_path("00_start_here.ipynb")
#: Name and display name of the kernel ``make lab`` registers for this environment.
KERNEL_NAME = "mmkit"
#: The JupyterLab extension that renders ipywidgets (package jupyterlab_widgets).
WIDGETS_EXTENSION = "@jupyter-widgets/jupyterlab-manager"
#: chromium flags: headless, no sandbox (root in containers), no GPU, no traffic of its own.
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")
#: The working copy of the notebooks that ``make lab`` serves (git-ignored), relative to where it starts.
LAB_DIR = "my-notebooks"
#: JupyterLab defaults of the kit's lab (``overrides.json`` in the working copy; the user's settings still win):
#: no "Jupyter news" toast over the outputs, no update check (a request to a website).
LAB_DEFAULTS = {"@jupyterlab/apputils-extension:notification": {"checkForUpdates": False, "fetchNews": "false"}}
_LAB_SETTINGS_DIR = ".jupyterlab"   # in the working copy: the lab's app_settings_dir
_SHIPPED_RECORD = ".mmkit-shipped.json"   # in the working copy: {notebook: SHA-256 of the shipped version copied}
# JupyterLab user settings of the test server: every cell rendered (no windowing), so that screenshots
# show the whole app and selectors find every widget.
_LAB_SETTINGS = {"@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"}}


class BrowserUnavailable(RuntimeError):
    """The playwright package or the chromium binary is missing (the message says how to install it)."""


class LabSetupError(RuntimeError):
    """JupyterLab cannot be set up as ``make lab`` needs it (the message says what to install)."""


def lab_command(root_dir: str | os.PathLike, port: int = 8888, token: str | None = None,
                extra: Sequence[str] = ()) -> list[str]:
    """The JupyterLab command line of ``make lab`` (``python -m mmkit lab``) and of the browser test.

    Headless-friendly: no browser opened, listening on 127.0.0.1 only, exactly ``port`` (no retry on
    another port, so the printed URL is right), new notebooks on the kernel ``mmkit``, ``--allow-root``
    when run as root; ``token`` ``""``
    turns the token off (tests), None keeps JupyterLab's own. Kernels get CurveZMQ transport
    encryption, so they start without ipykernel's "running over TCP without encryption" warning.
    JupyterLab's app settings (:data:`LAB_DEFAULTS`) are read from ``root_dir/.jupyterlab``.
    ``extra``: further JupyterLab options, appended.
    """
    root = Path(root_dir).absolute()
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}",
           f"--LabApp.app_settings_dir={root / _LAB_SETTINGS_DIR}",
           f"--MultiKernelManager.default_kernel_name={KERNEL_NAME}", "--KernelManager.transport_encryption=auto"]
    if token is not None:
        cmd.append(f"--IdentityProvider.token={token}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    return cmd + [str(a) for a in extra]


def register_kernel(prefix: str | os.PathLike = sys.prefix) -> Path:
    """Register this interpreter as the Jupyter kernel ``mmkit`` (display name "mmkit") under ``prefix``
    (default: this environment, as ``ipykernel install --sys-prefix``); idempotent. Returns its folder."""
    folder = Path(prefix) / "share" / "jupyter" / "kernels" / KERNEL_NAME
    try:
        spec = json.loads((folder / "kernel.json").read_text())
        if spec.get("argv", [None])[0] == sys.executable and spec.get("display_name") == KERNEL_NAME:
            return folder
    except (OSError, ValueError):
        pass
    done = subprocess.run([sys.executable, "-m", "ipykernel", "install", f"--prefix={prefix}", f"--name={KERNEL_NAME}",
                           f"--display-name={KERNEL_NAME}"], capture_output=True, text=True)
    if done.returncode != 0 or not (folder / "kernel.json").is_file():
        raise LabSetupError(f"could not register the kernel {KERNEL_NAME!r} in {prefix}: {done.stderr.strip()[-800:]}")
    return folder


def _labextensions(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "jupyterlab.labextensions", *args], capture_output=True, text=True)
    return re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)


def widgets_extension() -> str:
    """The line of ``jupyter labextension list`` for the ipywidgets extension, enabled and OK.

    A disabled extension is enabled (in this environment); a missing or broken one raises
    :class:`LabSetupError` saying what to install.
    """
    def line() -> str | None:
        return next((ln.strip() for ln in _labextensions("list").splitlines() if WIDGETS_EXTENSION in ln), None)

    found = line()
    if found and "disabled" in found:
        _labextensions("enable", "--level=sys_prefix", WIDGETS_EXTENSION)
        found = line()
    if not found or "enabled" not in found or "OK" not in found:
        raise LabSetupError(f"the ipywidgets extension {WIDGETS_EXTENSION} is not active in JupyterLab "
                            f"({found or 'not installed'}): pip install 'ipywidgets>=8' jupyterlab_widgets")
    return found


def prepare_lab(prefix: str | os.PathLike = sys.prefix) -> dict[str, str]:
    """What ``make lab`` needs before JupyterLab starts: the kernel registered, the widgets extension active."""
    return {"kernel": str(register_kernel(prefix)), "widgets": widgets_extension()}


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def working_copy(root_dir: str | os.PathLike = LAB_DIR,
                 shipped: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """Make ``root_dir`` the lab's working copy of the shipped notebooks; never overwrite an edit.

    A shipped notebook missing there is copied; one left as it was copied (its SHA-256 is that
    recorded in ``root_dir/.mmkit-shipped.json`` at the copy) follows the shipped version when that
    changes; one you edited (running it in the lab saves its outputs, an edit) is kept, and said so
    when the shipped version has changed since (delete yours to get the new one). The kit's
    JupyterLab defaults (:data:`LAB_DEFAULTS`) are written to ``root_dir/.jupyterlab/overrides.json``
    unless that file exists (then it is yours).

    Parameters
    ----------
    root_dir : the working copy (created if missing); it must not be, or lie inside, ``shipped``
    shipped : the package's notebooks (default :data:`mmkit.app.notebook.NOTEBOOKS`)

    Returns
    -------
    dict
        ``{"copied": [...], "updated": [...], "kept": [...], "edited_behind": [...]}``: notebook names
        copied now, replaced by a newer shipped version, left as they were, and edited copies whose
        shipped version has changed since.
    """
    from mmkit.app.notebook import NOTEBOOKS
    from mmkit.core.io import atomic_write_json, sha256_bytes

    shipped = Path(shipped or NOTEBOOKS).resolve()
    root = Path(root_dir)
    if root.resolve() == shipped or shipped in root.resolve().parents:
        raise LabSetupError(f"{root} is the package's own notebook folder ({shipped}): the lab would save your "
                            f"outputs and edits into the package; use a working copy (default {LAB_DIR}/)")
    if root.exists() and not root.is_dir():
        raise LabSetupError(f"{root.absolute()} is not a folder")
    record_path = root / _SHIPPED_RECORD
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = {}
    record = record if isinstance(record, dict) else {}
    report: dict[str, list[str]] = {"copied": [], "updated": [], "kept": [], "edited_behind": []}
    for source in sorted(shipped.glob("*.ipynb")):
        data, dest = source.read_bytes(), root / source.name
        new_hash = sha256_bytes(data)
        recorded = record.get(source.name)
        mine = sha256_bytes(dest.read_bytes()) if dest.is_file() else None
        if mine is not None and mine not in (new_hash, recorded):   # edited: never overwritten
            report["edited_behind" if recorded != new_hash else "kept"].append(source.name)
            continue
        report["copied" if mine is None else "kept" if mine == new_hash else "updated"].append(source.name)
        if mine != new_hash:   # missing, or untouched since copied while the shipped one changed
            atomic_write_bytes(dest, data)
        record[source.name] = new_hash
    atomic_write_json(record_path, record)
    overrides = root / _LAB_SETTINGS_DIR / "overrides.json"
    if not overrides.exists():
        atomic_write_text(overrides, json.dumps(LAB_DEFAULTS, indent=1) + "\n")
    return report


def start_lab(root_dir: str | os.PathLike = LAB_DIR, port: int | None = None, token: str | None = None,
              extra: Sequence[str] = (), open_notebook: str = START_NOTEBOOK.name, prepare: bool = True,
              dry_run: bool = False, out=None) -> list[str]:
    """``make lab``: prepare (:func:`prepare_lab`, :func:`working_copy`), print the URL, then replace this
    process by JupyterLab on the working copy ``root_dir`` (default ``my-notebooks/``, git-ignored).

    ``port``: default the first free port from 8888 on. ``token``: default a fresh random one (printed
    in the URL); ``""`` for none. The environment JupyterLab (and its kernels) gets: ``$MMKIT_WORKDIR``
    = the current directory (the notebooks' relative paths mean the checkout, not the notebook's
    folder) and ``$MMKIT_CACHE`` = its ``.cache/mmkit`` unless set (the dataset cache of ``make
    reproduce``). ``dry_run``: prepare, print and return the command without starting it.
    """
    out = out or sys.stdout
    root = Path(root_dir)
    if port is None:
        port = next((p for p in range(8888, 8988) if _port_is_free(p)), None)
        if port is None:
            raise LabSetupError("no free port in 8888-8987; pass --port")
    token = secrets.token_urlsafe(24) if token is None else token
    copies = working_copy(root)
    cmd = lab_command(root, port, token, extra)
    if prepare:
        ready = prepare_lab()
        print(f"kernel {KERNEL_NAME!r}: {ready['kernel']}\nwidgets: {ready['widgets']}", file=out)
    said = {"copied": "copied from the package", "updated": "updated to the package's newer version"}
    print(f"notebooks: your working copies in {root.absolute()} (git-ignored; run and edit them there, the package's "
          f"{notebook_path(open_notebook).parent} stays as shipped)", file=out)
    for what, names in copies.items():
        if names and what in said:
            print(f"  {said[what]}: {', '.join(names)}", file=out)
    for name in copies["edited_behind"]:
        print(f"  kept your edited {name}; the package's version has changed since: delete yours to get it", file=out)
    url = f"http://127.0.0.1:{port}/lab/tree/{open_notebook}" + (f"?token={token}" if token else "")
    print(f"JupyterLab on {root.absolute()}:\n    {url}\n(headless: open the URL in a browser, through an SSH "
          f"tunnel if remote: ssh -L {port}:127.0.0.1:{port} host; stop with Ctrl-C)", file=out, flush=True)
    if dry_run:
        print(" ".join(cmd), file=out, flush=True)
        return cmd
    env = {**os.environ, WORKDIR_ENV: os.environ.get(WORKDIR_ENV) or os.getcwd()}
    env.setdefault("MMKIT_CACHE", str(Path(env[WORKDIR_ENV]) / ".cache" / "mmkit"))
    os.execve(sys.executable, cmd, env)
    return cmd  # pragma: no cover - execve does not return


def find_browser() -> str:
    """Path of the chromium binary; raises :class:`BrowserUnavailable` when it or playwright is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise BrowserUnavailable("the 'playwright' package is missing: pip install -e '.[dev]'") from None
    named = os.environ.get("MMKIT_CHROMIUM")
    path = named or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path or not os.access(path, os.X_OK):
        raise BrowserUnavailable(f"no chromium binary ({'MMKIT_CHROMIUM=' + named if named else 'not on PATH'}): "
                                 "apt-get install chromium (as root; `make test` does it)")
    return path


def write_parameterized_notebook(notebook: str | os.PathLike, dest: str | os.PathLike,
                                 parameters: Mapping) -> Path:
    """Copy ``notebook`` to ``dest`` with papermill's injected-parameters cell (names and types checked)."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    declared = declared_parameters(notebook)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ParameterError(f"{notebook}: unknown parameter(s) {unknown}; it declares {sorted(declared)}")
    check_parameters(parameters, {name: declared[name] for name in parameters})
    nb = parameterize_notebook(load_notebook_node(str(notebook)), dict(parameters))
    return atomic_write_text(dest, nbformat.writes(nb))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyterlab_server(root_dir: str | os.PathLike, timeout: float = 90.0, env: Mapping[str, str] | None = None,
                      log_path: str | os.PathLike | None = None) -> Iterator[str]:
    """Run JupyterLab headless on 127.0.0.1 (free port, no token) serving ``root_dir``; yields its URL.

    Started as ``make lab`` starts it: ``python -m mmkit lab`` (kernel registered, widgets extension
    checked, :func:`lab_command`), plus what a test needs: no token, ``window.jupyterapp`` exposed,
    and the server's settings, workspaces and runtime files in a temporary folder removed on exit
    (``env`` adds variables). The server's output (its kernels' included) goes to ``log_path`` when
    given. The server (and with it its kernels) is stopped with SIGTERM, then SIGKILL after 20 s.
    """
    work = Path(tempfile.mkdtemp(prefix="mmkit-lab-"))
    for rel, values in _LAB_SETTINGS.items():
        atomic_write_text(work / "settings" / rel, json.dumps(values))
    port = _free_port()
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(work / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces"), "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **(env or {})}
    cmd = [sys.executable, "-m", "mmkit", "lab", "--root", str(Path(root_dir).resolve()), "--port", str(port),
           "--token", "", "--", "--LabApp.expose_app_in_browser=True"]
    server_log = Path(log_path) if log_path else work / "server.log"
    with open(server_log, "wb") as log:  # the server keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {proc.returncode}:\n{_tail(server_log)}")
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not answer within {timeout} s:\n{_tail(server_log)}")
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


@contextlib.contextmanager
def chromium_page(viewport: tuple[int, int] = (1600, 1400)):
    """A Playwright page in the system chromium (headless, no network of its own)."""
    from playwright.sync_api import sync_playwright

    executable = find_browser()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        try:
            yield browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        finally:
            browser.close()


# JS run in the page: the error of the first failed cell, "ok" once the app has drawn its results, else null.
_NOTEBOOK_STATE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!w || !w.content || !w.content.model) return null;
  for (const cell of w.content.model.cells) {
    if (cell.type !== 'code') continue;
    for (const o of cell.outputs.toJSON()) {
      if (o.output_type === 'error') return 'error: ' + o.ename + ': ' + o.evalue;
    }
  }
  return document.querySelector('.mmkit-results .mmkit-ranking') ? 'ok' : null;
}"""


# JS for the start-here notebook: the first error, else "ok" once every code cell has run, the kernel is
# idle, the cell tagged `sphere` shows its (loaded) image, a plotly figure is drawn and the widget shows results.
_START_HERE_STATE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!w || !w.content || !w.content.model) return null;
  let pending = false;
  for (const cell of w.content.model.cells) {
    if (cell.type !== 'code') continue;
    for (const o of cell.outputs.toJSON()) {
      if (o.output_type === 'error') return 'error: ' + o.ename + ': ' + o.evalue;
    }
    if (cell.executionCount === null) pending = true;
  }
  const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
  if (pending || !kernel || kernel.status !== 'idle') return null;
  const sphere = w.content.widgets.find(c => (c.model.getMetadata('tags') || []).includes('sphere'));
  if (!sphere) return 'error: no cell tagged sphere';
  const img = sphere.node.querySelector('.jp-OutputArea-output img');
  if (!(img && img.complete && img.naturalWidth > 0)) return null;
  if (!document.querySelector('.js-plotly-plot .main-svg')) return null;
  return document.querySelector('.mmkit-results .mmkit-ranking') ? 'ok' : null;
}"""


# JS: what of the retrieval app is drawn over something else, or cut: boxes of the result lists, their tables
# and columns, the query pickers and every button, compared pairwise and with what holds them (1 px tolerance).
_LAYOUT_PROBLEMS = """() => {
  const app = document.querySelector('.mmkit-retrieval-app');
  if (!app) return ['no retrieval app on the page'];
  const box = el => el.getBoundingClientRect();
  const name = el => (el.className && typeof el.className === 'string' ? el.className.split(' ')
                      .filter(c => c.startsWith('mmkit-')).join('.') : '') || el.tagName.toLowerCase();
  const overlap = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > 1
                            && Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 1;
  const inside = (a, b) => a.left >= b.left - 1 && a.right <= b.right + 1
                           && a.top >= b.top - 1 && a.bottom <= b.bottom + 1;
  const problems = [];
  const pairwise = (els, what) => els.forEach((a, i) => els.slice(i + 1).forEach(b => {
    if (overlap(box(a), box(b))) problems.push(`${what} overlap: ${name(a)} / ${name(b)}`);
  }));
  const held = app.closest('.jp-OutputArea-output') || app.parentElement;
  if (box(app).right > box(held).right + 1) problems.push(`the app is wider than its output area`);
  const lists = [...app.querySelectorAll('.mmkit-results')];
  pairwise(lists, 'result lists');
  for (const list of lists) {
    const ranking = list.querySelector('.mmkit-ranking');
    const table = list.querySelector('table');
    if (!table) { problems.push(`${name(list)}: no table`); continue; }
    if (!inside(box(table), box(list))) problems.push(`${name(list)}: its table leaves its box`);
    if (ranking.scrollWidth > ranking.clientWidth + 1) problems.push(`${name(list)}: its text runs over its width`);
    const heads = [...table.querySelectorAll('th')];
    pairwise(heads, `${name(list)} columns`);
    heads.forEach(th => {
      if (!inside(box(th), box(table))) problems.push(`${name(list)}: column ${th.textContent} leaves the table`);
    });
  }
  const pickers = [...app.querySelectorAll('[class*="mmkit-query-"]')];
  pairwise(pickers, 'query pickers');
  pairwise([...app.querySelectorAll('.widget-hbox')].filter(b => b.querySelector('.mmkit-target')).flatMap(
           b => [...b.children]), 'controls');
  for (const button of app.querySelectorAll('button')) {
    if (button.scrollWidth > button.clientWidth + 1) problems.push(`button "${button.textContent.trim()}" is cut`);
    const picker = button.closest('[class*="mmkit-query-"]');
    if (picker && !inside(box(button), box(picker))) {
      problems.push(`button "${button.textContent.trim()}" leaves its picker`);
    }
  }
  return problems;
}"""


class DemoPage:
    """A notebook open in JupyterLab with the retrieval widget: run it, operate the widget, read the results."""

    def __init__(self, page, timeout: float = 120.0, ready: str = _NOTEBOOK_STATE):
        self.page = page
        self.timeout_ms = int(timeout * 1000)
        self.ready = ready

    def run_all(self, timeout: float = 900.0) -> None:
        """Run every cell once the kernel is ready; wait up to ``timeout`` s until the page is ready (the
        widget drawn, or what ``ready`` asks for); raise on a cell's error.

        Loading a preset checks its whole cache first, which takes minutes on a busy machine.
        """
        self.page.wait_for_function(
            "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            " return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
            " && w.sessionContext.session.kernel.connectionStatus === 'connected'); }", timeout=self.timeout_ms)
        self.page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        state = self.page.wait_for_function(self.ready, polling=500, timeout=timeout * 1000).json_value()
        if state != "ok":
            raise RuntimeError(f"the notebook failed in the browser: {state}")

    def kernel_name(self) -> str:
        """The name of the kernel the notebook runs on (``mmkit`` for the start-here notebook)."""
        return self.page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.name")

    def image_size(self, tag: str) -> tuple[int, int]:
        """Natural (width, height) of the first image in the output of the cell tagged ``tag``."""
        return tuple(self.page.evaluate(
            """tag => { const w = window.jupyterapp.shell.currentWidget;
                        const c = w.content.widgets.find(c => (c.model.getMetadata('tags') || []).includes(tag));
                        const img = c && c.node.querySelector('.jp-OutputArea-output img');
                        return img ? [img.naturalWidth, img.naturalHeight] : [0, 0]; }""", tag))

    def state(self, run: str) -> dict:
        """What the result list of ``run`` shows: ids, query, target, distance, version, error."""
        from mmkit.app.widgets import run_slug

        node = self.page.locator(f".mmkit-results-{run_slug(run)} .mmkit-ranking")
        attrs = {k: node.get_attribute(f"data-mmkit-{k}") for k in
                 ("run", "ids", "query", "target", "distance", "version", "error")}
        return {**attrs, "ids": json.loads(attrs["ids"]), "query": json.loads(attrs["query"]),
                "version": int(attrs["version"])}

    def _versions(self) -> list[int]:
        return [int(v) for v in self.page.eval_on_selector_all(
            ".mmkit-results .mmkit-ranking", "nodes => nodes.map(n => n.dataset.mmkitVersion)")]

    def _act(self, action) -> None:
        """Do ``action`` and wait until every result list shows the update it causes."""
        before = max(self._versions())
        action()
        self.page.wait_for_function(
            """old => { const v = [...document.querySelectorAll('.mmkit-results .mmkit-ranking')]
                          .map(n => Number(n.dataset.mmkitVersion));
                        return v.length > 0 && v.every(x => x > old && x === v[0]); }""",
            arg=before, timeout=self.timeout_ms)

    def search(self, modality: str, text: str) -> None:
        """Type ``text`` into the search box of ``modality`` and press Enter (selects the best match)."""
        box = self.page.locator(f".mmkit-search-{modality} input")
        self._act(lambda: (box.fill(text), box.press("Enter")))

    def set_target(self, modality: str) -> None:
        self._act(lambda: self.page.locator(".mmkit-target select").select_option(modality))

    def set_distance(self, distance: str) -> None:
        self._act(lambda: self.page.locator(".mmkit-distance select").select_option(distance))

    def show_file_browser(self, width: int, height: int = 900) -> int:
        """Make the window ``width`` x ``height`` and open JupyterLab's file browser in the left sidebar;
        returns the file browser's width in pixels once the app has been laid out again."""
        self.page.set_viewport_size({"width": width, "height": height})
        self.page.evaluate("() => { window.jupyterapp.shell.activateById('filebrowser'); }")
        self.page.wait_for_function("() => { const f = document.getElementById('filebrowser');"
                                    " return !!f && f.getBoundingClientRect().width > 100; }", timeout=self.timeout_ms)
        self.page.wait_for_timeout(500)   # the notebook panel is resized after the sidebar opens
        return int(self.page.evaluate("() => document.getElementById('filebrowser').getBoundingClientRect().width"))

    def layout_problems(self) -> list[str]:
        """What of the retrieval app overlaps or is cut (empty when it lays out cleanly)."""
        return self.page.evaluate(_LAYOUT_PROBLEMS)

    def save(self, timeout: float = 60.0) -> None:
        """Save the current notebook through JupyterLab (File ▸ Save) and wait until it is saved."""
        self.page.evaluate("async () => { await window.jupyterapp.commands.execute('docmanager:save'); }")
        self.page.wait_for_function("() => { const w = window.jupyterapp.shell.currentWidget;"
                                    " return !!w && w.context && !w.context.model.dirty; }", timeout=timeout * 1000)

    def open(self, path: str, timeout: float = 60.0) -> None:
        """Open the notebook ``path`` (relative to the lab's folder) in JupyterLab and wait for its kernel."""
        self.page.evaluate("p => { window.jupyterapp.commands.execute('docmanager:open', {path: p}); }", path)
        self.page.wait_for_function(
            "p => { const w = window.jupyterapp.shell.currentWidget; return !!(w && w.context && w.context.path === p"
            " && w.context.isReady); }", arg=path, timeout=timeout * 1000)

    def append_markdown(self, text: str) -> None:
        """Add a markdown cell holding ``text`` at the end of the current notebook, as a user types one."""
        self.page.evaluate("t => { const model = window.jupyterapp.shell.currentWidget.content.model;"
                           " model.sharedModel.insertCell(model.cells.length, {cell_type: 'markdown', source: t}); }",
                           text)

    def screenshot(self) -> bytes:
        """PNG of the whole retrieval app (the window is made tall enough to show all of it)."""
        app = self.page.locator(".mmkit-retrieval-app")
        size = self.page.viewport_size
        height = app.bounding_box()["height"]
        self.page.set_viewport_size({"width": size["width"], "height": int(max(size["height"], height + 300))})
        app.evaluate("node => node.scrollIntoView({block: 'start'})")
        return app.screenshot()


@contextlib.contextmanager
def demo_page(runs: Mapping[str, str | os.PathLike], data: str, cache: str = "", split: str = "test",
              timeout: float = 120.0, run_timeout: float = 900.0, **parameters) -> Iterator[DemoPage]:
    """Open the retrieval-demo notebook in headless JupyterLab + chromium, run it, yield a :class:`DemoPage`.

    ``runs`` ({name: run directory}), ``data`` (preset or bundle directory) and ``cache`` are
    passed to the notebook as absolute paths (its kernel runs in a temporary folder); an empty
    ``cache`` means :func:`mmkit.data.default_cache_dir` of this process. Further notebook
    parameters (``target``, ``distance``, ``k``) may be given by name. ``run_timeout`` bounds the
    notebook's run (data loading and encoding), ``timeout`` the server start and each interaction.
    """
    from mmkit.data import default_cache_dir

    find_browser()
    absolute = {name: str(Path(run).resolve()) for name, run in runs.items()}
    spec = str(Path(data).resolve()) if Path(data).is_dir() else data
    params = {"data": spec, "cache": str(Path(cache or default_cache_dir()).resolve()), "runs": json.dumps(absolute),
              "split": split, **parameters}
    with tempfile.TemporaryDirectory(prefix="mmkit-demo-") as root:
        write_parameterized_notebook(DEMO_NOTEBOOK, Path(root) / DEMO_NOTEBOOK.name, params)
        with jupyterlab_server(root, timeout=timeout) as url, chromium_page() as page:
            page.set_default_timeout(timeout * 1000)
            page.goto(f"{url}/lab/tree/{DEMO_NOTEBOOK.name}")
            demo = DemoPage(page, timeout)
            demo.run_all(run_timeout)
            yield demo


@contextlib.contextmanager
def start_here_page(data: str, runs: Mapping[str, str | os.PathLike] | None = None, cache: str = "",
                    timeout: float = 120.0, run_timeout: float = 900.0, log_path: str | os.PathLike | None = None,
                    **parameters) -> Iterator[DemoPage]:
    """Open ``00_start_here`` in headless JupyterLab + chromium, started as ``make lab`` starts it, run
    every cell, and yield a :class:`DemoPage` once the widget, the sphere figure and the interactive
    sphere are drawn.

    ``data`` (preset or bundle directory), ``runs`` ({name: run directory}; None: the notebook
    trains its quick pair in the temporary folder) and ``cache`` are passed as absolute paths;
    further notebook parameters by name. ``log_path``: where the server's output goes.
    """
    from mmkit.data import default_cache_dir

    find_browser()
    spec = str(Path(data).resolve()) if Path(data).is_dir() else data
    params = {"data": spec, "cache": str(Path(cache or default_cache_dir()).resolve()), **parameters}
    if runs:
        params["runs"] = json.dumps({name: str(Path(run).resolve()) for name, run in runs.items()})
    with tempfile.TemporaryDirectory(prefix="mmkit-start-") as root:
        params.setdefault("train_dir", str(Path(root) / "runs"))
        params.setdefault("reports", str(Path(root) / "no-reports"))
        write_parameterized_notebook(START_NOTEBOOK, Path(root) / START_NOTEBOOK.name, params)
        with jupyterlab_server(root, timeout=timeout, log_path=log_path) as url, chromium_page() as page:
            page.set_default_timeout(timeout * 1000)
            page.goto(f"{url}/lab/tree/{START_NOTEBOOK.name}")
            start = DemoPage(page, timeout, ready=_START_HERE_STATE)
            start.run_all(run_timeout)
            yield start


def screenshot_retrieval_demo(runs: Mapping[str, str | os.PathLike], out: str | os.PathLike, data: str,
                              cache: str = "", split: str = "test", **parameters) -> Path:
    """Run the demo notebook in the browser and write a PNG of the app to ``out`` (atomically).

    For the README: ``screenshot_retrieval_demo({"Proposed": run_p, "Baseline": run_b},
    "reports/figures/retrieval_widget.png", data="small")``.
    """
    with demo_page(runs, data, cache=cache, split=split, **parameters) as demo:
        png = demo.screenshot()
    return atomic_write_bytes(out, png)
