"""The reproduce pipeline: dependency order, skip-if-unchanged, tables written from the runs; what it
shows while it runs (the running steps, their elapsed time, the dataset's item count); kernels that
start without the "running over TCP without encryption" warning."""
import csv
import io
import json
import re
import tempfile
from pathlib import Path

import nbformat
import pytest

from mmkit.pipeline.reproduce import LiveStatus, Step, plan, read_progress, run_plan, step_key


def test_plan_shape():
    steps = plan("quick")
    names = [s.name for s in steps]
    assert names[0] == "dataset" and names[-4:] == ["evaluate", "ablation", "sphere", "runtime"]
    trains = [s for s in steps if s.name.startswith("train-")]
    assert len(trains) == 3 * 10  # baseline, pcme, mpc, ls_only, proposed at 1e-12 and the five sweep values
    assert all(s.after == ("dataset",) for s in trains)
    by_name = {s.name: s for s in steps}
    main = json.loads(by_name["evaluate"].parameters["runs"])
    assert len(main) == 4 * 3 and all(any(m in r for m in ("baseline-", "pcme-", "mpc-", "proposed-l1-")) for r in main)
    assert len(json.loads(by_name["ablation"].parameters["runs"])) == 8 * 3  # proposed x 6, baseline, ls_only
    assert by_name["runtime"].exclusive and not any(s.exclusive for s in steps[:-1])
    assert set(by_name["runtime"].after) == {s.name for s in trains}


def test_paper_plan_and_backbone_encoder():
    """`paper`: full data, 5 seeds; `--encoder backbones` reaches every training step (and only those)."""
    steps = plan("paper", encoder="backbones")
    trains = [s for s in steps if s.name.startswith("train-")]
    assert steps[0].parameters["data"] == "full" and len(trains) == 5 * 10
    assert all(s.parameters["encoder"] == "backbones" and s.parameters["epochs"] == 40 for s in trains)
    assert not any("encoder" in s.parameters for s in steps if not s.name.startswith("train-"))
    assert "encoder" not in plan("paper")[1].parameters  # the notebook's default: heads
    with pytest.raises(ValueError, match="encoder"):
        plan("quick", encoder="resnet")


def test_smoke_pipeline_runs_then_skips(tiny, tmp_path):
    data = str(Path(tiny["data"]["train"].root))
    runs_dir, tables = tmp_path / "runs", tmp_path / "tables"
    figures = tmp_path / "figures"
    steps = plan("smoke", data=data, runs_dir=str(runs_dir), tables_dir=str(tables), figures_dir=str(figures))
    log = []
    status = run_plan(steps, runs_dir=runs_dir, jobs=2, log=log.append)
    assert set(status.values()) == {"ran"}
    assert re.fullmatch(r"\[\d+/\d+\] runtime: ran in \d+(s|m\d\ds) \(alone\)", log[-1]), log[-1]
    for name in ("recall_image", "recall_text", "recall_audio", "lambda_sweep", "lambda_limits", "runtime"):
        assert (tables / f"{name}.md").is_file() and (tables / f"{name}.tex").is_file()
    assert "Proposed / Baseline" in (tables / "runtime.md").read_text()
    for name in ("lambda_sweep", "kappa_reliability", "runtime", "sphere_projection_print"):
        assert all((figures / f"{name}.{ext}").stat().st_size > 0 for ext in ("pdf", "svg", "png"))
    assert (figures / "sphere_projection.html").stat().st_size > 0
    with open(tables / "lambda_sweep.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["lambda_s"] for r in rows} == {"1e-12", "0.01", "0.1", "1", "10", "100"}
    assert list(rows[0]) == ["dataset", "method", "task", "metric", "lambda_s", "distance", "mean", "std", "n_seeds"]
    again = run_plan(steps, runs_dir=runs_dir, jobs=2, log=lambda *_: None)
    assert set(again.values()) == {"skipped"}
    tweaked = steps[1].__class__(**{**steps[1].__dict__, "parameters": {**steps[1].parameters, "epochs": 3}})
    assert step_key(tweaked, ["x"]) != step_key(steps[1], ["x"])  # a changed parameter re-runs the step
    assert step_key(steps[1], ["y"]) != step_key(steps[1], ["x"])  # so does a changed dependency


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_live_status_shows_running_steps_their_time_and_progress(tmp_path):
    clock, out = _Clock(), io.StringIO()
    live = LiveStatus(stream=out, interval=30, clock=clock)
    progress = tmp_path / "progress.json"
    progress.write_text(json.dumps({"what": "rendering small", "done": 812, "total": 2160, "unit": "items"}))
    live.start("dataset", progress)
    clock.now += 133
    live.start("train-x", tmp_path / "none.json")             # no report (yet): just the time
    clock.now += 45
    assert live.line() == "running: dataset 2m58s (rendering small: 812/2,160 items) · train-x 45s"
    live.draw()
    assert out.getvalue() == live.line() + "\n"             # not a terminal: plain lines
    assert live.finish("dataset") == pytest.approx(178)
    live.finish("train-x")
    assert live.line() == ""
    progress.write_text("{half a fi")                          # a torn or foreign file is no report
    assert read_progress(progress) is None
    assert read_progress(tmp_path / "missing.json") is None


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("pass", metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(src) for src in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_the_plan_shows_a_running_steps_progress(tmp_path, monkeypatch):
    """A step whose kernel reports through the build's progress writer: the status line the pipeline
    prints while it runs names the step, its elapsed time and the count."""
    import mmkit.pipeline.reproduce as reproduce

    nb = _notebook(tmp_path / "count.ipynb", "import time\nfrom mmkit.data.embedded.build import _Progress\n"
                   "report = _Progress(interval=0)\nfor i in range(4):\n"
                   "    report('rendering tiny', i, 4)\n    time.sleep(1.5)")
    monkeypatch.setattr(reproduce, "notebook_path", lambda name: nb)
    out = io.StringIO()
    log = []
    with LiveStatus(stream=out, interval=0.25) as live:
        status = run_plan([Step("dataset", "count.ipynb")], runs_dir=tmp_path / "runs", log=log.append, live=live)
    assert status == {"dataset": "ran"}
    shown = out.getvalue().splitlines()
    assert any(re.fullmatch(r"running: dataset \d+s \(rendering tiny: [0-3]/4 items\)", line) for line in shown), shown
    assert re.fullmatch(r"\[1/1\] dataset: ran in \d+s", log[-1]), log


def test_the_dataset_build_reports_rendered_items(tmp_path, monkeypatch):
    import mmkit.data.embedded.build as build
    from mmkit.data.embedded.corpus import Work

    works = [Work(**{**build.select_works("tiny")[0].to_dict(), "key": f"fake/{i}"}) for i in range(3)]
    monkeypatch.setattr(build, "select_works", lambda *a, **k: works)
    rendered = []
    monkeypatch.setattr(build, "_build_star", lambda args: rendered.append(args))   # renders nothing
    progress = tmp_path / "progress.json"
    monkeypatch.setenv(build.PROGRESS_ENV, str(progress))
    with pytest.raises(RuntimeError, match="no usable item"):
        build.build_dataset("tiny", cache=tmp_path / "cache", workers=1, progress=False)
    assert len(rendered) == 3
    assert json.loads(progress.read_text()) == {"what": "rendering tiny", "done": 3, "total": 3, "unit": "items"}
    assert read_progress(progress) == "rendering tiny: 3/3 items"


def test_kernels_start_without_the_transport_warning_and_errors_still_show(tmp_path, capfd, monkeypatch):
    import papermill as pm

    from mmkit.app.notebook import run_notebook

    nb = _notebook(tmp_path / "env.ipynb", "import os\nprint(os.environ['MMKIT_PROBE'], os.getpid())")
    out = run_notebook(nb, tmp_path / "out.ipynb", progress=False, env={"MMKIT_PROBE": "seen by the kernel"})
    text = json.loads(out.read_text())["cells"][-1]["outputs"][0]["text"]
    pid = "".join(text).split()[-1]
    assert "seen by the kernel" in "".join(text)
    assert not Path(f"/proc/{pid}").exists() or "ipykernel" not in Path(f"/proc/{pid}/cmdline").read_text()  # shut down
    assert "without encryption" not in capfd.readouterr().err
    # where pyzmq has no CURVE: IPC sockets, no warning either
    import zmq

    monkeypatch.setattr(zmq, "has", lambda feature: False if feature == "curve" else True)
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    ipc_dirs = set(Path(tempfile.gettempdir()).glob("mmkit-kernel-*"))
    watch = _notebook(tmp_path / "watch.ipynb", "import os\nprint(os.environ['MMKIT_PROBE'], sorted(os.listdir('.')))")
    run_notebook(watch, tmp_path / "ipc.ipynb", progress=False, env={"MMKIT_PROBE": "over ipc"}, cwd=here)
    text = (tmp_path / "ipc.ipynb").read_text()
    assert "over ipc" in text and "kernel-ipc" not in text  # while the kernel runs: no socket in the cwd
    assert "without encryption" not in capfd.readouterr().err
    # the IPC socket files went to a private temporary folder, removed at shutdown
    assert list(here.iterdir()) == [] and set(Path(tempfile.gettempdir()).glob("mmkit-kernel-*")) == ipc_dirs
    monkeypatch.undo()
    # errors are not hidden
    bad = _notebook(tmp_path / "bad.ipynb", "raise ValueError('a real error')")
    with pytest.raises(pm.PapermillExecutionError, match="a real error"):
        run_notebook(bad, tmp_path / "bad-out.ipynb", progress=False)
    # the check sees the warning: a kernel papermill starts on its own prints it
    monkeypatch.setenv("MMKIT_PROBE", "plain")
    pm.execute_notebook(str(nb), str(tmp_path / "plain.ipynb"), kernel_name="python3", progress_bar=False)
    assert "Kernel is running over TCP without encryption" in capfd.readouterr().err


def test_live_status_on_a_terminal_redraws_one_line(tmp_path):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    clock, out = _Clock(), Terminal()
    live = LiveStatus(stream=out, clock=clock)
    assert live.interval == 1.0
    live.start("evaluate")
    clock.now += 75
    live.draw()
    live.log("[1/2] dataset: ran in 6m10s")              # printed above the status line, which is redrawn
    assert out.getvalue() == ("\r\x1b[Krunning: evaluate 1m15s" "\r\x1b[K[1/2] dataset: ran in 6m10s\n"
                              "\r\x1b[Krunning: evaluate 1m15s")
