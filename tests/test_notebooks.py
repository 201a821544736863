"""Every notebook executes top to bottom under papermill with tiny parameters (outputs to temporary
folders), one test per notebook so that each failure is reported on its own; committed notebooks
carry no outputs; parameter validation stops bad calls."""
import json
import re
from pathlib import Path

import nbformat
import pytest

from mmkit.app.notebook import NOTEBOOKS as NOTEBOOK_DIR
from mmkit.app.notebook import ParameterError, check_parameters, declared_parameters, run_notebook
from mmkit.data import make_synthetic_bundle
from mmkit.model.run import Run
from mmkit.pipeline.study import ROUND2_SETTINGS, read_round2_settings

ROOT = Path(__file__).resolve().parents[1]

NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
#: The one list of the notebooks and their tiny parameters (a new notebook adds its entry here). The
#: session's data and output folders are added by ``_wiring``.
TINY_PARAMETERS = {
    "00_start_here.ipynb": {"epochs": 2, "distance": "kl", "k": 3},  # trains its quick pair (no pipeline runs there)
    "01_dataset.ipynb": {"n_show": 2},
    "02_train.ipynb": {"epochs": 3, "hidden": 32},
    "03_evaluate.ipynb": {"distance": "kl"},  # its runs: the 02 run (the `train_run` fixture)
    "04_ablation.ipynb": {"distance": "kl"},  # likewise
    "05_runtime.ipynb": {"batch": 8, "backbone_batch": 4, "steps": 1, "repeats": 2},
    "06_sphere.ipynb": {"epochs": 2, "max_items": 10, "n_samples": 4, "plotly_formats": "html"},  # projects the 02 run
    "07_retrieval_demo.ipynb": {"epochs": 2, "distance": "kl", "k": 5},  # trains its quick pair (empty runs)
    # one seed of E1 with tiny training settings (a check of the driver, not study results)
    "08_when_ls_helps.ipynb": {"experiments": '["E1"]', "seeds": "0", "jobs": 1, "analyse": False,
                               "overrides": '{"epochs": 1, "batch_size": 16, "hidden": 16, "layers": 1, "n_samples": 4}'},
    "09_uncertainty.ipynb": {"epochs": 2, "n_resamples": 50},  # trains its quick model on `views_data`
}
#: The notebooks that read the 02 run.
USES_TRAIN_RUN = ("03_evaluate.ipynb", "04_ablation.ipynb", "06_sphere.ipynb")
#: The notebooks that need data with views (`views_data`, a synthetic bundle, instead of `tiny`).
USES_VIEWS = ("09_uncertainty.ipynb",)
#: What each notebook must have written, relative to its test's folder (tables/, figures/, ...).
OUTPUTS = {
    "00_start_here.ipynb": ["demo-runs/proposed/best.pt", "demo-runs/baseline/best.pt"],
    "02_train.ipynb": ["run/best.pt"],
    "03_evaluate.ipynb": ["tables/recall_image.md", "figures/kappa_reliability.pdf"],
    "04_ablation.ipynb": ["tables/lambda_sweep.md", "figures/lambda_sweep.pdf"],
    "05_runtime.ipynb": ["tables/runtime.md", "figures/runtime.pdf"],
    "06_sphere.ipynb": ["figures/sphere_d3.html", "figures/sphere_projection.html", "figures/sphere_d3_print.pdf",
                        "figures/training_curves_d3.pdf"],
    "07_retrieval_demo.ipynb": ["demo-runs/proposed/best.pt", "demo-runs/baseline/best.pt"],
    "08_when_ls_helps.ipynb": ["store/E1/clean-baseline-s0.json", "store/E1/clean-debiased-s0.json",
                               "store/E1/clean-proposed-0.1-s0.json", "store/E1/clean-proposed-s0.json"],
    "09_uncertainty.ipynb": ["demo-runs/proposed-s0/best.pt", "figures/uncertainty_severity.pdf",
                             "figures/uncertainty_selective.pdf"],
}


def test_every_notebook_has_tiny_parameters_and_no_outputs():
    assert {p.name for p in NOTEBOOKS} == set(TINY_PARAMETERS)
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), path.name
        assert nb.metadata["kernelspec"] == {"display_name": "mmkit", "language": "python", "name": "mmkit"}, path.name
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} is committed with outputs"


def _wiring(name: str, data: str, folder: Path, run: Path | None) -> dict:
    """The parameters that point notebook ``name`` at this session's data and at ``folder`` for its
    outputs (only those the notebook declares; absolute paths, so that nothing lands in the checkout)."""
    values = {"data": data, "tables_dir": str(folder / "tables"), "figures_dir": str(folder / "figures"),
              "train_dir": str(folder / "demo-runs"), "reports": str(folder / "no-reports"),
              "store": str(folder / "store"), "work": str(folder / "work")}
    if name == "02_train.ipynb":
        values["out"] = str(folder / "run")
    if name in USES_TRAIN_RUN:
        values.update(runs=json.dumps([str(run)]), run=str(run), illustration_out=str(folder / "sphere-d3"))
    declared = declared_parameters(NOTEBOOK_DIR / name)
    return {k: v for k, v in values.items() if k in declared}


def _execute(name: str, data: str, folder: Path, run: Path | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    params = {**_wiring(name, data, folder, run), **TINY_PARAMETERS[name]}
    out = run_notebook(NOTEBOOK_DIR / name, folder / name, params, cwd=folder, progress=False)
    executed = json.loads(out.read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors[0]
    missing = [p for p in OUTPUTS.get(name, []) if not (folder / p).is_file()]
    assert not missing, f"{name} did not write {missing}"
    return executed


@pytest.fixture(scope="module")
def data(tiny) -> str:
    return str(Path(tiny["data"]["train"].root))


@pytest.fixture(scope="module")
def views_data(tmp_path_factory) -> str:
    """A small synthetic bundle with 4 views per modality and many-to-many caption truth."""
    path = tmp_path_factory.mktemp("views") / "bundle"
    return str(make_synthetic_bundle(path, n_items=(120, 60, 60), truth=True, views=4, seed=0))


@pytest.fixture(scope="module")
def train_run(data, tmp_path_factory) -> Path:
    """02 executed once (its own test checks it); its run is the input of 03, 04 and 06."""
    folder = tmp_path_factory.mktemp("02_train")
    _execute("02_train.ipynb", data, folder)
    return folder / "run"


@pytest.mark.parametrize("name", sorted(TINY_PARAMETERS))
def test_notebook_executes(name, request, tmp_path):
    if name == "02_train.ipynb":
        assert (request.getfixturevalue("train_run") / "best.pt").is_file()
        return
    data = request.getfixturevalue("views_data" if name in USES_VIEWS else "data")
    run = request.getfixturevalue("train_run") if name in USES_TRAIN_RUN else None
    executed = _execute(name, data, tmp_path, run)
    if name == "07_retrieval_demo.ipynb":  # the listing shows KL as the app does: "KL ↓", a divergence (>= 0)
        listing = "".join("".join(o.get("text", "")) for o in executed["cells"][-2]["outputs"])
        assert listing.count("KL ↓ (smaller is closer)") == 2, listing
        values = [float(line.split()[-1]) for line in listing.splitlines() if re.match(r"\s+\d+\.", line)]
        assert len(values) == 10 and min(values) >= 0, listing
    if name == "08_when_ls_helps.ipynb":  # the grid's runs of E1 at seed 0, nothing else
        assert sorted(p.name for p in (tmp_path / "store" / "E1").glob("*.json")) == [
            "clean-baseline-s0.json", "clean-debiased-s0.json", "clean-proposed-0.1-s0.json", "clean-proposed-s0.json"]
    if name == "09_uncertainty.ipynb":  # both figures shown; by default the quick model has K* and drawn views
        shown = [o for c in executed["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert len(shown) == 2
        config = Run(tmp_path / "demo-runs" / "proposed-s0").config
        k_star = read_round2_settings(ROOT / ROUND2_SETTINGS)["kappa"]
        assert config.train_views == "sample" and {k: getattr(config, k) for k in k_star} == k_star


def test_uncertainty_refuses_data_without_views(tmp_path):
    bundle = make_synthetic_bundle(tmp_path / "bundle", n_items=(30, 10, 10))
    with pytest.raises(Exception, match="has no views: use a -real preset"):
        run_notebook(NOTEBOOK_DIR / "09_uncertainty.ipynb", tmp_path / "x.ipynb", {"data": str(bundle)}, cwd=tmp_path,
                     progress=False)
    assert not (tmp_path / "runs").exists()  # refused before training


def test_parameter_validation(tmp_path):
    path = NOTEBOOK_DIR / "02_train.ipynb"
    with pytest.raises(ParameterError, match=r"unknown parameter 'epoch'"):
        run_notebook(path, tmp_path / "x.ipynb", {"epoch": 3})
    with pytest.raises(ParameterError, match=r"'epochs' must be int, got str"):
        run_notebook(path, tmp_path / "x.ipynb", {"epochs": "3"})
    with pytest.raises(ParameterError, match=r"'seed' must be int, got bool"):
        check_parameters({"seed": True}, {"seed": "int"})
    check_parameters({"lambda_s": 1}, {"lambda_s": "float"})  # an int is a valid float
    assert declared_parameters(path)["lambda_s"] == "float"
