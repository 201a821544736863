"""Drive the retrieval-demo notebook in a real browser: JupyterLab headless + Playwright + Debian chromium.

Used by ``tests/test_browser.py`` and by :func:`screenshot_retrieval_demo` (the README figure).
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
from typing import Iterator, Mapping

from mmkit.app.notebook import ParameterError, check_parameters, declared_parameters, notebook_path
from mmkit.core.io import atomic_write_bytes, atomic_write_text

__all__ = ["CHROMIUM_ARGS", "DEMO_NOTEBOOK", "BrowserUnavailable", "find_browser", "write_parameterized_notebook",
           "jupyterlab_server", "chromium_page", "DemoPage", "demo_page", "screenshot_retrieval_demo"]

DEMO_NOTEBOOK = notebook_path("07_retrieval_demo.ipynb")
#: chromium flags: headless, no sandbox (root in containers), no GPU, no traffic of its own.
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")
# JupyterLab user settings: no news or update toasts, every cell rendered (no windowing), so that
# screenshots show the whole app and selectors find every widget.
_LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"checkForUpdates": False, "fetchNews": "false"},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


class BrowserUnavailable(RuntimeError):
    """The playwright package or the chromium binary is missing (the message says how to install it)."""


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
def jupyterlab_server(root_dir: str | os.PathLike, timeout: float = 90.0) -> Iterator[str]:
    """Run JupyterLab headless on 127.0.0.1 (free port, no token) serving ``root_dir``; yields its URL.

    The server's settings, workspaces and runtime files live in a temporary folder removed on
    exit; the server (and with it its kernels) is stopped with SIGTERM, then SIGKILL after 20 s.
    """
    work = Path(tempfile.mkdtemp(prefix="mmkit-lab-"))
    for rel, values in _LAB_SETTINGS.items():
        atomic_write_text(work / "settings" / rel, json.dumps(values))
    port = _free_port()
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(work / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces"), "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", "--IdentityProvider.token=", "--LabApp.expose_app_in_browser=True",
           f"--ServerApp.root_dir={Path(root_dir).resolve()}"] + (["--allow-root"] if os.geteuid() == 0 else [])
    with open(work / "server.log", "wb") as log:  # the server keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {proc.returncode}:\n{_tail(work / 'server.log')}")
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not answer within {timeout} s:\n{_tail(work / 'server.log')}")
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


class DemoPage:
    """The retrieval-demo notebook open in JupyterLab: run it, operate the widget, read the results."""

    def __init__(self, page, timeout: float = 120.0):
        self.page = page
        self.timeout_ms = int(timeout * 1000)

    def run_all(self, timeout: float = 900.0) -> None:
        """Run every cell once the kernel is ready; wait up to ``timeout`` s for the app (raise on a cell's error).

        Loading a preset checks its whole cache first, which takes minutes on a busy machine.
        """
        self.page.wait_for_function(
            "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            " return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
            " && w.sessionContext.session.kernel.connectionStatus === 'connected'); }", timeout=self.timeout_ms)
        self.page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        state = self.page.wait_for_function(_NOTEBOOK_STATE, polling=500, timeout=timeout * 1000).json_value()
        if state != "ok":
            raise RuntimeError(f"the demo notebook failed in the browser: {state}")

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


def screenshot_retrieval_demo(runs: Mapping[str, str | os.PathLike], out: str | os.PathLike, data: str,
                              cache: str = "", split: str = "test", **parameters) -> Path:
    """Run the demo notebook in the browser and write a PNG of the app to ``out`` (atomically).

    For the README: ``screenshot_retrieval_demo({"Proposed": run_p, "Baseline": run_b},
    "reports/figures/retrieval_widget.png", data="small")``.
    """
    with demo_page(runs, data, cache=cache, split=split, **parameters) as demo:
        png = demo.screenshot()
    return atomic_write_bytes(out, png)
