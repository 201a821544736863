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

from mmkit.model.run import CheckpointError, Run
from mmkit.pipeline.reproduce import (LiveStatus, Step, output_dirs, plan, read_progress, reproduced_runs, results_dir,
                                     run_dir, run_plan, step_key)


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


def test_reproduce_on_other_data_leaves_the_committed_results_and_00_uses_its_runs(tiny, tmp_path, monkeypatch):
    """The sequence of issue 25: a bundle `my-bundle` in the checkout (docs/your_data.md), then
    `reproduce --preset smoke --data my-bundle` from the checkout, then 00_start_here from the lab's
    working copy (another folder) with `data = "my-bundle"`. The committed tables and figures are left
    as they were; the results go to reports/my-bundle/smoke/ (git-ignored); the notebook reuses exactly
    those runs, finds their data from its own folder, and runs under GEOMSTATS_BACKEND=pytorch."""
    import shutil

    from mmkit.__main__ import main
    from mmkit.app.notebook import WORKDIR_ENV, notebook_path, run_notebook

    checkout = tmp_path / "checkout"
    shutil.copytree(Path(tiny["data"]["train"].root), checkout / "my-bundle")
    committed = {checkout / "reports" / "tables" / "recall_image.md": "committed table\n",
                 checkout / "reports" / "figures" / "runtime.pdf": "committed figure\n"}
    for path, text in committed.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.chdir(checkout)
    assert main(["reproduce", "--preset", "smoke", "--data", "my-bundle", "--cache", str(tiny["cache"]),
                 "--readme", "README.md"]) == 2                         # the README takes the committed tables only
    assert main(["reproduce", "--preset", "smoke", "--data", "my-bundle", "--cache", str(tiny["cache"])]) == 0
    assert all(path.read_text() == text for path, text in committed.items())
    assert sorted(p.name for d in ("tables", "figures") for p in (checkout / "reports" / d).iterdir()) == [
        "recall_image.md", "runtime.pdf"]                                 # nothing else written there
    results = checkout / "reports" / "my-bundle" / "smoke"
    assert (checkout / "reports" / "my-bundle" / ".gitignore").read_text().splitlines()[-1] == "*"
    tables, figures = results / "tables", results / "figures"
    for name in ("recall_image", "recall_text", "recall_audio", "lambda_sweep", "lambda_limits", "runtime"):
        assert (tables / f"{name}.md").is_file() and (tables / f"{name}.tex").is_file()
    assert "Proposed / Baseline" in (tables / "runtime.md").read_text()
    for name in ("lambda_sweep", "kappa_reliability", "runtime", "sphere_projection_print"):
        assert all((figures / f"{name}.{ext}").stat().st_size > 0 for ext in ("pdf", "svg", "png"))
    assert (figures / "sphere_projection.html").stat().st_size > 0
    with open(tables / "lambda_sweep.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["lambda_s"] for r in rows} == {"1e-12", "0.01", "0.1", "1", "10", "100"}
    assert {r["dataset"] for r in rows} == {"my-bundle"}
    assert list(rows[0])[:5] == ["dataset", "method", "task", "metric", "lambda_s"]
    dirs = output_dirs("smoke", "my-bundle")                          # as the command line named them
    assert Path(dirs["tables_dir"]).resolve() == tables
    steps = plan("smoke", data="my-bundle", cache=str(tiny["cache"]), **dirs)
    again = run_plan(steps, runs_dir=dirs["runs_dir"], jobs=2, log=lambda *_: None)
    assert set(again.values()) == {"skipped"}
    tweaked = steps[1].__class__(**{**steps[1].__dict__, "parameters": {**steps[1].parameters, "epochs": 3}})
    assert step_key(tweaked, ["x"]) != step_key(steps[1], ["x"])  # a changed parameter re-runs the step
    assert step_key(steps[1], ["y"]) != step_key(steps[1], ["x"])  # so does a changed dependency
    # 00_start_here again, from the lab's working copy, the data named as the user names them
    lab = checkout / "my-notebooks"
    lab.mkdir()
    out = run_notebook(notebook_path("00_start_here.ipynb"), lab / "00.ipynb",
                       {"data": "my-bundle", "cache": str(tiny["cache"]), "distance": "kl", "k": 3}, cwd=lab,
                       progress=False, env={WORKDIR_ENV: str(checkout), "GEOMSTATS_BACKEND": "pytorch"})
    executed = nbformat.read(out, as_version=4)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors[:1]
    said = "".join(o.get("text", "") for c in executed.cells[:6] for o in c.get("outputs", []))
    assert "models: the runs of make reproduce" in said and str(results / "runs" / "train" / "proposed-l1-s0") in said
    assert not (lab / "runs").exists() and not (checkout / "runs").exists()               # nothing trained


def test_results_of_other_presets_data_and_encoders_go_to_their_own_folder(tmp_path):
    reports = tmp_path / "reports"
    assert results_dir(reports=reports) == results_dir("quick", "small", "heads", reports) == reports
    assert results_dir("quick", encoder="backbones", reports=reports) == reports / "small" / "quick-backbones"
    assert results_dir("paper", reports=reports) == reports / "full" / "paper"
    assert results_dir("smoke", reports=reports) == reports / "tiny" / "smoke"
    (tmp_path / "tables").mkdir()                                  # a bundle named like committed material
    assert results_dir("quick", tmp_path / "tables", reports=reports) == reports / "data-tables" / "quick"
    dirs = output_dirs("smoke", tmp_path / "tables", reports=reports, tables_dir="explicit")
    assert dirs == {"runs_dir": str(reports / "data-tables" / "smoke" / "runs"), "tables_dir": "explicit",
                    "figures_dir": str(reports / "data-tables" / "smoke" / "figures")}
    assert (reports / "data-tables" / ".gitignore").read_text().splitlines()[-1] == "*"
    assert output_dirs(reports=reports)["tables_dir"] == str(reports / "tables")
    assert not (reports / ".gitignore").exists()
    with pytest.raises(ValueError, match="preset must be one of"):
        results_dir("fast")


def _fake_run(path: Path, data: str) -> Path:
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"data": data}))
    (path / "best.pt").write_bytes(b"weights")
    return path


def test_reproduced_runs_are_only_those_trained_on_the_data_shown(tmp_path, monkeypatch):
    """The issue's crash: smoke runs on a bundle in reports/runs were taken for `make reproduce`'s and
    their relative data path did not resolve from the notebook's folder."""
    reports, bundle = tmp_path / "checkout" / "reports", tmp_path / "checkout" / "my-bundle"
    bundle.mkdir(parents=True)
    elsewhere = tmp_path / "my-notebooks"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for method, lam in (("proposed", 1.0), ("baseline", 0.0)):   # runs on the bundle where quick's runs belong
        _fake_run(run_dir(reports / "runs", method, lam, 0), str(bundle))
    assert reproduced_runs("", reports) is None and reproduced_runs("small", reports) is None
    assert reproduced_runs(bundle, reports) is None               # not where reproduce puts runs on the bundle
    smoke = results_dir("smoke", bundle, reports=reports) / "runs"
    pair = {name: _fake_run(run_dir(smoke, method, lam, 0), "../../../../../../my-bundle")   # relative to the run
            for name, method, lam in (("Proposed", "proposed", 1.0), ("Baseline", "baseline", 0.0))}
    assert Run(pair["Proposed"]).data_spec == str(bundle.resolve())
    assert reproduced_runs(bundle, reports) == {name: str(path) for name, path in pair.items()}
    assert reproduced_runs("tiny", reports) is None
    (pair["Baseline"] / "manifest.json").write_text(json.dumps({"data": "small"}))   # a pair trained on two data
    assert reproduced_runs(bundle, reports) is None
    for method, lam in (("proposed", 1.0), ("baseline", 0.0)):   # quick on its own data: found for data ""
        _fake_run(run_dir(tmp_path / "r2" / "runs", method, lam, 0), "small")
    assert reproduced_runs("", tmp_path / "r2") == reproduced_runs("small", tmp_path / "r2") is not None
    (pair["Baseline"] / "manifest.json").write_text(json.dumps({"data": "gone-bundle"}))
    with pytest.raises(CheckpointError, match="neither a preset"):
        Run(pair["Baseline"]).data_spec


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

    nb = _notebook(tmp_path / "count.ipynb", "import time\nfrom mmkit.data.embedded.build import Progress\n"
                   "report = Progress(interval=0)\nfor i in range(4):\n"
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
    monkeypatch.setattr(build, "build_item", lambda *args: rendered.append(args))   # renders nothing
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


def test_a_finished_notebooks_kernel_is_not_interrupted_at_shutdown(tmp_path):
    """jupyter_client sends SIGINT to a kernel before asking it to shut down; a kernel inside a message
    handler then logs "KeyboardInterrupt caught in kernel." at the end of a clean run. The last cell
    leaves a SIGINT handler in place (the kernel's restore hook disabled) that writes a marker: our kernel
    manager shuts down without the interrupt, papermill's own manager sends it (so the check can fail)."""
    import papermill as pm

    from mmkit.app.notebook import run_notebook

    marker = tmp_path / "sigint"
    nb = _notebook(tmp_path / "sigint.ipynb",
                   "import signal\nkernel = get_ipython().kernel\n"
                   "kernel.pre_handler_hook = kernel.post_handler_hook = lambda: None\n"
                   f"signal.signal(signal.SIGINT, lambda *_: open({str(marker)!r}, 'w').write('interrupted'))")
    run_notebook(nb, tmp_path / "out.ipynb", progress=False)
    assert not marker.exists()
    pm.execute_notebook(str(nb), str(tmp_path / "plain.ipynb"), kernel_name="python3", progress_bar=False)
    assert marker.read_text() == "interrupted"


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
