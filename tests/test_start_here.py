"""The first hour: `make lab` (the Makefile target, the one JupyterLab command line, the kernel "mmkit",
the widgets extension), the start-here notebook reusing the runs of `make reproduce` and showing what
mmkit.retrieval ranks, and `train` saying which data it uses before it starts.

The start-here notebook's plain run (training its quick pair) is one of tests/test_notebooks.py's
notebooks; in a real browser it is tests/test_browser.py's."""
import html
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from mmkit.app.browser import (KERNEL_NAME, LAB_DEFAULTS, LAB_DIR, LabSetupError, lab_command, register_kernel,
                               widgets_extension, working_copy)
from mmkit.app.demo import demo_card, demo_distance, demo_runs
from mmkit.app.widgets import RetrievalSession
from mmkit.app.notebook import notebook_path, run_notebook
from mmkit.model.run import Run, encode_split
from mmkit.pipeline.reproduce import results_dir, run_dir
from mmkit.training.demo import train_demo_runs
from retrieval_oracle import expected_top_ids

ROOT = Path(__file__).resolve().parents[1]


def test_make_lab_runs_the_one_lab_command(tmp_path):
    """`make lab` runs `python -m mmkit lab`, which prints the URL, where the working copy is, and exactly
    the command line lab_command builds (the browser test starts JupyterLab through the same CLI)."""
    # --no-print-directory: under `make test` this make is a sub-make, which would print "Leaving directory"
    dry = subprocess.run(["make", "-n", "--no-print-directory", "lab"], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert dry.stdout.strip().splitlines()[-1] == ".venv/bin/python -m mmkit lab"
    assert "lab" in next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith(".PHONY"))
    done = subprocess.run([sys.executable, "-m", "mmkit", "lab", "--port", "8977", "--token", "t0k3n",
                           "--print-command"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "http://127.0.0.1:8977/lab/tree/00_start_here.ipynb?token=t0k3n" in [ln.strip() for ln in lines]
    assert any(f"your working copies in {tmp_path / LAB_DIR}" in ln for ln in lines)
    cmd = shlex.split(lines[-1])
    assert cmd == lab_command(tmp_path / LAB_DIR, 8977, "t0k3n")
    assert {"--no-browser", "--ServerApp.ip=127.0.0.1", "--ServerApp.port=8977", "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={tmp_path / LAB_DIR}",
            f"--LabApp.app_settings_dir={tmp_path / LAB_DIR / '.jupyterlab'}"} <= set(cmd)
    assert (ROOT / "notebooks" / "00_start_here.ipynb").resolve() == notebook_path("00_start_here.ipynb").resolve()
    spec = json.loads((Path(sys.prefix) / "share" / "jupyter" / "kernels" / KERNEL_NAME / "kernel.json").read_text())
    assert spec["display_name"] == KERNEL_NAME and spec["argv"][0] == sys.executable
    line = widgets_extension()
    assert "@jupyter-widgets/jupyterlab-manager" in line and "enabled" in line and "OK" in line
    for package_folder in ("notebooks", "mmkit/notebooks"):  # serving the package's own notebooks is refused
        bad = subprocess.run([sys.executable, "-m", "mmkit", "lab", "--root", package_folder, "--print-command"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert bad.returncode == 2 and "the package's own notebook folder" in bad.stderr, bad.stderr
    assert "/my-notebooks/" in (ROOT / ".gitignore").read_text().splitlines()


def test_the_working_copy_keeps_edits_and_follows_untouched_notebooks(tmp_path):
    """Copied on the first start; an edited copy is never overwritten (and named when the package's
    version moves on); an untouched copy follows the package; the news toast is off in its settings."""
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for name in ("a.ipynb", "b.ipynb", "c.ipynb"):
        (shipped / name).write_text(f'{{"v": "{name} 1"}}')
    work = tmp_path / "work"
    assert working_copy(work, shipped)["copied"] == ["a.ipynb", "b.ipynb", "c.ipynb"]
    assert all((work / n).read_bytes() == (shipped / n).read_bytes() for n in ("a.ipynb", "b.ipynb", "c.ipynb"))
    (work / "a.ipynb").write_text('{"v": "my edit"}')                       # the user's edit (or saved outputs)
    (work / "c.ipynb").unlink()                                              # deleted: copied afresh
    assert working_copy(work, shipped) == {"copied": ["c.ipynb"], "updated": [], "kept": ["a.ipynb", "b.ipynb"],
                                           "edited_behind": []}
    for name in ("a.ipynb", "b.ipynb"):                                      # a newer package
        (shipped / name).write_text(f'{{"v": "{name} 2"}}')
    assert working_copy(work, shipped) == {"copied": [], "updated": ["b.ipynb"], "kept": ["c.ipynb"],
                                           "edited_behind": ["a.ipynb"]}
    assert (work / "a.ipynb").read_text() == '{"v": "my edit"}'
    assert (work / "b.ipynb").read_text() == '{"v": "b.ipynb 2"}'
    overrides = json.loads((work / ".jupyterlab" / "overrides.json").read_text())
    assert overrides == LAB_DEFAULTS
    assert overrides["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
    (work / ".jupyterlab" / "overrides.json").write_text("{}")               # the user's choice is kept
    working_copy(work, shipped)
    assert (work / ".jupyterlab" / "overrides.json").read_text() == "{}"
    with pytest.raises(LabSetupError, match="package's own notebook folder"):
        working_copy(shipped / "sub", shipped)


def test_the_kits_lab_has_the_news_toast_off(tmp_path):
    """JupyterLab started as `make lab` starts it reads the working copy's defaults: no news toast (the
    notification plugin's default "none" asks about news in a toast over the outputs), no update check."""
    import urllib.request

    from mmkit.app.browser import jupyterlab_server

    with jupyterlab_server(tmp_path / "lab") as url:
        with urllib.request.urlopen(f"{url}/lab/api/settings/@jupyterlab/apputils-extension:notification") as answer:
            settings = json.loads(answer.read())
    defaults = {name: spec.get("default") for name, spec in settings["schema"]["properties"].items()}
    assert defaults["fetchNews"] == "false" and defaults["checkForUpdates"] is False
    assert settings["settings"] == {}                     # the user's own settings are neither read nor written


def test_kernel_registration_is_idempotent(tmp_path):
    folder = register_kernel(tmp_path)
    spec = folder / "kernel.json"
    assert json.loads(spec.read_text())["display_name"] == "mmkit"
    before = spec.stat().st_mtime_ns
    assert register_kernel(tmp_path) == folder and spec.stat().st_mtime_ns == before     # left as it was
    spec.write_text(json.dumps({**json.loads(spec.read_text()), "display_name": "renamed"}))
    register_kernel(tmp_path)
    assert json.loads(spec.read_text())["display_name"] == "mmkit"                      # repaired


def test_train_without_data_says_which_data_before_it_starts(tmp_path):
    cmd = [sys.executable, "-m", "mmkit", "train", "--out", str(tmp_path / "run"), "--epochs", "1", "--cache",
           str(tmp_path / "cache"), "--no-progress", "--batch-size", "64"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("data: synthetic, the generated demo bundle") and "no --data was given" in lines[0]
    assert "--data tiny" in lines[0]
    assert lines[1].startswith("data: synthetic: train ") and lines[1].endswith(" items")
    assert lines.index(next(ln for ln in lines if ln.startswith("best epoch"))) > 1        # said before training
    assert Run(tmp_path / "run").manifest["data"] == "synthetic"


def _outputs(executed, tag=None, index=None):
    """Outputs of the code cell tagged ``tag``, or of the ``index``-th code cell of the committed notebook
    (papermill's injected-parameters cell left out)."""
    cells = [c for c in executed.cells
             if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]
    cell = next(c for c in cells if tag in c.metadata.get("tags", [])) if tag else cells[index]
    return cell.outputs


def test_start_here_reuses_the_runs_of_make_reproduce(tiny, tmp_path):
    """With seed-0 Proposed and Baseline runs where `make reproduce` puts them, the notebook trains
    nothing, loads their data, and shows the captions mmkit.retrieval ranks for audio & score."""
    test = tiny["data"]["test"]
    bundle = str(Path(tiny["data"]["train"].root))
    trained = train_demo_runs(tiny["data"], tmp_path / "trained", epochs=2, data_spec=bundle, progress=False)
    pipeline = results_dir("quick", bundle, reports=tmp_path / "reports") / "runs"    # reports/<bundle>/quick/runs
    for name, method, lam in (("Proposed", "proposed", 1.0), ("Baseline", "baseline", 0.0)):
        shutil.copytree(trained[name], run_dir(pipeline, method, lam, 0))
    out = run_notebook(notebook_path("00_start_here.ipynb"), tmp_path / "start.ipynb",
                       {"data": bundle, "reports": str(tmp_path / "reports"), "cache": str(tiny["cache"]),
                        "distance": "kl", "k": 4}, cwd=tmp_path, progress=False)
    executed = nbformat.read(out, as_version=4)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors[:1]
    said = "".join(o.get("text", "") for o in _outputs(executed, index=2))
    assert "models: the runs of make reproduce" in said and str(run_dir(pipeline, "proposed", 1.0, 0)) in said
    assert not (tmp_path / "runs").exists()                                               # nothing trained
    _shows_the_ranking_of(executed, trained, test, 4)


def _shows_the_ranking_of(executed, runs: dict, test, k: int) -> None:
    """The ranked captions are mmkit.retrieval's top-k for {audio, image} of the first complete item -> text,
    each with its κ, and under each list the κ spread of the split per modality; then the app and the sphere."""
    first = next(r for r in range(len(test)) if all(test.present[m][r] for m in ("audio", "image", "text")))
    query = str(test.ids[first])
    shown = _outputs(executed, index=4)[0]["data"]["text/html"]
    rows = {str(i): r for r, i in enumerate(test.ids)}
    for name, run in runs.items():
        enc = encode_split(Run(run).load_model(), test)
        want = expected_top_ids(enc, test, {"audio": query, "image": query}, "text", "kl", k)
        block, after = shown.split(f"<b>{name}</b>")[1].split("</table>", 1)
        cells = [c.split("</td>")[0] for c in block.split("<td>")[1:]]
        assert cells[2::4] == [html.escape(str(test.captions[rows[i]])) for i in want], name
        assert cells[3::4] == [f"κ {float(enc['text'].concentration[rows[i]]):.3g}" for i in want], name
        kappa = enc["text"].concentration[torch.from_numpy(test.present["text"].copy())].double()
        low, high = torch.quantile(kappa, torch.tensor([0.05, 0.95], dtype=torch.float64)).tolist()
        spread = f"text {low:.3g}–{high:.3g} (CV {float(kappa.std() / kappa.mean()):.0%})"
        assert spread in after.split("</div>")[0], name
    assert "application/vnd.jupyter.widget-view+json" in _outputs(executed, index=3)[0]["data"]     # audio + score
    assert "application/vnd.jupyter.widget-view+json" in _outputs(executed, index=5)[0]["data"]     # the app
    images = [o for o in _outputs(executed, tag="sphere") if "image/png" in o.get("data", {})]
    assert len(images) == 1                                                               # the sphere figure
    assert "application/vnd.plotly.v1+json" in _outputs(executed, index=7)[0]["data"]          # interactive sphere


def test_start_here_on_tiny_uses_the_shipped_pair_without_training(tiny, tmp_path):
    """With `data` tiny and no runs of make reproduce, the notebook trains nothing: it answers with the
    pretrained pair shipped with mmkit, says what it is (from its card) and ranks with it."""
    out = run_notebook(notebook_path("00_start_here.ipynb"), tmp_path / "start.ipynb",
                       {"data": "tiny", "reports": str(tmp_path / "reports"), "cache": str(tiny["cache"]),
                        "train_dir": str(tmp_path / "quick"), "distance": "kl", "k": 3}, cwd=tmp_path, progress=False)
    executed = nbformat.read(out, as_version=4)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors[:1]
    said = "".join(o.get("text", "") for o in _outputs(executed, index=2))
    card = demo_card()
    assert "models: the pretrained demo pair shipped with mmkit, trained on " \
           f"{card['train_items']} items of {card['data']['bundle']}" in said
    assert f"near-duplicate groups of {card['excluded']['bundle']}" in said and "CARD.md" in said
    assert not (tmp_path / "quick").exists() and not (tmp_path / "runs").exists()        # nothing trained
    _shows_the_ranking_of(executed, demo_runs(), tiny["data"]["test"], 3)


def test_start_here_is_committed_thin_and_clean():
    nb = nbformat.read(notebook_path("00_start_here.ipynb"), as_version=4)
    assert nb.metadata["kernelspec"]["name"] == KERNEL_NAME
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []) and "check_parameters" in code[1].source
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert len(code) <= 10 and sum(len(c.source.splitlines()) for c in code) < 120
    with pytest.raises(Exception, match="'k' must be int"):
        run_notebook(notebook_path("00_start_here.ipynb"), "/tmp/never.ipynb", {"k": "5"})


def test_the_featured_query_finds_its_caption_in_the_top_5_with_the_shipped_pair(tiny):
    """Issue 25's bar for a first query that means something: on tiny's test split, the featured query
    (the first item with audio, image and text; its audio and score fused) ranks its own caption in
    the top 5 for both shipped models, with the distance the card chose on validation; and κ differs
    across items (CV of the text κ over the split above 5 %)."""
    test = tiny["data"]["test"]
    first = next(r for r in range(len(test)) if all(test.present[m][r] for m in ("audio", "image", "text")))
    query = str(test.ids[first])
    session = RetrievalSession(test, demo_runs())
    for name in session.runs:
        ranked = session.rank({"audio": query, "image": query}, "text", demo_distance(), run=name, k=5)
        assert ranked.true_ranks[query] <= 5, (name, ranked.true_ranks[query])
        kappa = session.gallery(name, "text")[2].double()
        assert float(kappa.std() / kappa.mean()) > 0.05, name
