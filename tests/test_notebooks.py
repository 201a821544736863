"""Every notebook executes top to bottom under papermill with tiny parameters (outputs to a temporary
folder); committed notebooks carry no outputs; parameter validation stops bad calls."""
import json
from pathlib import Path

import nbformat
import pytest

from mmkit.app.notebook import ParameterError, check_parameters, declared_parameters, run_notebook

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
TINY_PARAMETERS = {
    "01_dataset.ipynb": {"n_show": 2},
    "02_train.ipynb": {"epochs": 3, "hidden": 32},
    "03_evaluate.ipynb": {},  # its runs come from the 02 run below
    "04_ablation.ipynb": {},  # likewise
    "05_runtime.ipynb": {"batch": 8, "backbone_batch": 4, "steps": 1, "repeats": 2},
    "06_sphere.ipynb": {"epochs": 2, "max_items": 10, "n_samples": 4, "plotly_formats": "html"},  # projects the 02 run
    "07_retrieval_demo.ipynb": {"epochs": 2, "distance": "kl", "k": 5},  # trains its quick pair (empty runs)
    # one seed of E1 with tiny training settings (a check of the driver, not study results)
    "08_when_ls_helps.ipynb": {"experiments": '["E1"]', "seeds": "0", "jobs": 1, "analyse": False,
                               "overrides": '{"epochs": 1, "batch_size": 16, "hidden": 16, "layers": 1, "n_samples": 4}'},
}


def test_every_notebook_has_tiny_parameters_and_no_outputs():
    assert {p.name for p in NOTEBOOKS} == set(TINY_PARAMETERS)
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), path.name
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} is committed with outputs"


def _run(path, params, tmp_path):
    out = run_notebook(path, tmp_path / path.name, params, cwd=tmp_path, progress=False)
    executed = json.loads(out.read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_notebooks_execute(tiny, tmp_path):
    data = str(Path(tiny["data"]["train"].root))
    by_name = {p.name: p for p in NOTEBOOKS}
    _run(by_name["01_dataset.ipynb"], {"data": data, **TINY_PARAMETERS["01_dataset.ipynb"]}, tmp_path)
    run = str(tmp_path / "run")
    _run(by_name["02_train.ipynb"], {"data": data, "out": run, **TINY_PARAMETERS["02_train.ipynb"]}, tmp_path)
    tables, figures = tmp_path / "tables", tmp_path / "figures"
    for name in ("03_evaluate.ipynb", "04_ablation.ipynb"):
        _run(by_name[name], {"data": data, "runs": json.dumps([run]), "distance": "kl", "tables_dir": str(tables),
                             "figures_dir": str(figures)}, tmp_path)
    _run(by_name["05_runtime.ipynb"], {"tables_dir": str(tables), "figures_dir": str(figures),
                                       **TINY_PARAMETERS["05_runtime.ipynb"]}, tmp_path)
    for name in ("recall_image", "lambda_sweep", "runtime"):
        assert (tables / f"{name}.md").is_file()
    for name in ("kappa_reliability", "lambda_sweep", "runtime"):
        assert (figures / f"{name}.pdf").is_file()
    _run(by_name["06_sphere.ipynb"], {"data": data, "run": run, "illustration_out": str(tmp_path / "sphere-d3"),
                                      "figures_dir": str(figures), **TINY_PARAMETERS["06_sphere.ipynb"]}, tmp_path)
    for name in ("sphere_d3.html", "sphere_projection.html", "sphere_d3_print.pdf", "training_curves_d3.pdf"):
        assert (figures / name).is_file()
    demo = tmp_path / "demo-runs"
    _run(by_name["07_retrieval_demo.ipynb"], {"data": data, "train_dir": str(demo),
                                              **TINY_PARAMETERS["07_retrieval_demo.ipynb"]}, tmp_path)
    assert all((demo / m / "best.pt").is_file() for m in ("proposed", "baseline"))


def test_the_study_notebook_runs_and_stores_its_runs(tiny, tmp_path):
    data = str(Path(tiny["data"]["train"].root))
    path = next(p for p in NOTEBOOKS if p.name == "08_when_ls_helps.ipynb")
    store = tmp_path / "store"
    _run(path, {"data": data, "store": str(store), "work": str(tmp_path / "work"), "tables_dir": str(tmp_path / "t"),
                "figures_dir": str(tmp_path / "f"), **TINY_PARAMETERS[path.name]}, tmp_path)
    assert sorted(p.name for p in (store / "E1").glob("*.json")) == [
        "clean-baseline-s0.json", "clean-debiased-s0.json", "clean-proposed-0.1-s0.json", "clean-proposed-s0.json"]


def test_parameter_validation(tmp_path):
    path = next(p for p in NOTEBOOKS if p.name == "02_train.ipynb")
    with pytest.raises(ParameterError, match=r"unknown parameter 'epoch'"):
        run_notebook(path, tmp_path / "x.ipynb", {"epoch": 3})
    with pytest.raises(ParameterError, match=r"'epochs' must be int, got str"):
        run_notebook(path, tmp_path / "x.ipynb", {"epochs": "3"})
    with pytest.raises(ParameterError, match=r"'seed' must be int, got bool"):
        check_parameters({"seed": True}, {"seed": "int"})
    check_parameters({"lambda_s": 1}, {"lambda_s": "float"})  # an int is a valid float
    assert declared_parameters(path)["lambda_s"] == "float"
