"""The notebooks in a real browser: JupyterLab headless on 127.0.0.1, started by the command `make lab`
runs (`python -m mmkit lab`), the Debian chromium driven by Playwright.

* the start-here notebook run top to bottom on the kernel "mmkit": the widget shows what
  mmkit.retrieval.scores ranks, the sphere figure and the interactive sphere are drawn, and no kernel
  warns about its transport;
* the retrieval demo run top to bottom, the widget operated (query by search, target modality,
  distance); the ids the page shows must be exactly those mmkit.retrieval.scores ranks for that query;
  then at 1,280 px with the file browser open, no result list, table column, picker or button overlaps
  another or is cut (their bounding boxes compared);
* notebooks run, edited and saved through the lab change the lab's working copy only: the package's
  notebooks stay byte-identical and `git status` clean.

A screenshot of the app goes to $MMKIT_SCREENSHOT when set, else to the test's temporary folder.
Without chromium or playwright the test is skipped, except under CI=true, where that is a failure.
"""
import os
import subprocess
from pathlib import Path

import pytest

from mmkit.app.browser import demo_page, start_here_page
from mmkit.app.notebook import NOTEBOOKS
from mmkit.core.io import atomic_write_bytes, sha256_file
from mmkit.model.run import Run, encode_split
from mmkit.training.demo import train_demo_runs
from retrieval_oracle import expected_top_ids

K = 10
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_runs(tiny, tmp_path_factory):
    """A Proposed and a Baseline run trained for 3 epochs on the tiny preset."""
    return train_demo_runs(tiny["data"], tmp_path_factory.mktemp("demo-runs"), epochs=3, progress=False)


def test_retrieval_demo_in_chromium(browser, tiny, demo_runs, tmp_path):
    test = tiny["data"]["test"]
    encodings = {name: encode_split(Run(run).load_model(), test) for name, run in demo_runs.items()}

    def expected(query, target, distance):
        return {name: expected_top_ids(enc, test, query, target, distance, K) for name, enc in encodings.items()}

    def shown(demo):
        states = {name: demo.state(name) for name in demo_runs}
        assert all(s["error"] == "" for s in states.values()), states
        return states

    first = str(test.ids[0])
    # a second query whose top-k differs from the first one's under both runs (so that the check is not vacuous)
    start = expected({"audio": first, "text": first}, "image", "ssw")
    second = next(str(i) for i in test.ids[1:] if all(
        ids != start[n] for n, ids in expected({"audio": str(i), "text": str(i)}, "image", "ssw").items()))

    with demo_page(demo_runs, data=str(test.root), split="test", target="image", distance="ssw", k=K) as demo:
        states = shown(demo)
        for name, s in states.items():
            assert (s["query"], s["target"], s["distance"]) == ({"audio": first, "text": first}, "image", "ssw")
            assert s["ids"] == start[name]

        demo.search("audio", second)  # an id typed into the audio search box; the text picker follows
        states = shown(demo)
        want = expected({"audio": second, "text": second}, "image", "ssw")
        for name, s in states.items():
            assert s["query"] == {"audio": second, "text": second}
            assert s["ids"] == want[name] and s["ids"] != start[name]

        demo.set_target("audio")  # the audio box leaves the query; image was never in it
        states = shown(demo)
        want = expected({"text": second}, "audio", "ssw")
        for name, s in states.items():
            assert (s["query"], s["target"]) == ({"text": second}, "audio")
            assert s["ids"] == want[name]

        demo.set_distance("kl")
        want = expected({"text": second}, "audio", "kl")
        assert {name: s["ids"] for name, s in shown(demo).items()} == want

        png = demo.screenshot()
        # a laptop screen: 1,280 px wide with the file browser open; nothing of the app overlaps or is cut
        assert demo.show_file_browser(1280) > 150
        assert demo.layout_problems() == []
        laptop = demo.screenshot()                                   # the whole app, still 1,280 px wide
        # the check sees overlaps: lists side by side at half the width, their tables as wide as their content
        # needed before (~560 px), as the widget drew them at 1,440 px
        style = demo.page.add_style_tag(content=".mmkit-results {flex: 0 0 49% !important} "
                                                ".mmkit-ranking table {width: 560px !important}")
        problems = demo.layout_problems()
        assert any("its table leaves its box" in p for p in problems), problems
        style.evaluate("node => node.remove()")
    atomic_write_bytes(os.environ.get("MMKIT_SCREENSHOT") or tmp_path / "retrieval_widget.png", png)
    atomic_write_bytes(tmp_path / "retrieval_widget_1280.png", laptop)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def _package_notebooks() -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(NOTEBOOKS.glob("*.ipynb"))}


def test_start_here_in_chromium(browser, tiny, demo_runs, tmp_path):
    shipped = _package_notebooks()
    test = tiny["data"]["test"]
    first = next(str(test.ids[r]) for r in range(len(test))
                 if all(test.present[m][r] for m in ("audio", "image", "text")))
    log = tmp_path / "server.log"
    with start_here_page(str(test.root), runs=demo_runs, cache=str(tiny["cache"]), distance="kl", k=5,
                         log_path=log) as page:
        assert page.kernel_name() == "mmkit"                     # the kernel make lab registers
        width, height = page.image_size("sphere")
        assert width > 500 and height > 250                      # the sphere figure, rendered
        for name, run in demo_runs.items():
            enc = encode_split(Run(run).load_model(), test)
            state = page.state(name)
            assert state["error"] == "" and state["query"] == {"audio": first, "image": first}
            assert state["ids"] == expected_top_ids(enc, test, {"audio": first, "image": first}, "text", "kl", 5)
        png = page.page.screenshot(full_page=True)
        # run, edited and saved through the lab: the working copy changes, the package's notebooks do not
        page.save()
        page.open("01_dataset.ipynb")                                # copied into the lab's folder by `mmkit lab`
        page.append_markdown("my note, saved by the lab")
        page.save()
        saved = {name: page.page.evaluate("p => fetch('/api/contents/' + p).then(r => r.json())", name)["content"]
                 for name in ("00_start_here.ipynb", "01_dataset.ipynb")}
    assert any(c["outputs"] for c in saved["00_start_here.ipynb"]["cells"] if c["cell_type"] == "code")
    assert saved["01_dataset.ipynb"]["cells"][-1]["source"] == "my note, saved by the lab"
    assert _package_notebooks() == shipped                                 # byte-identical
    status = subprocess.run(["git", "status", "--porcelain", "--", "mmkit/notebooks", "notebooks"], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    assert status.stdout == ""
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    atomic_write_bytes(tmp_path / "start_here.png", png)
    assert "without encryption" not in log.read_text()          # the kernel started without the transport warning
