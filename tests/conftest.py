"""Shared test settings: one intra-op thread (the machines are shared; small ops slow down
with two), float64 oracles via mpmath at 50 digits."""
import os
import signal
import subprocess
import sys

import mpmath
import pytest
import torch

torch.set_num_threads(1)
mpmath.mp.dps = 50


@pytest.fixture
def seeded():
    """Seed torch's global RNG (the vMF sampler draws from it, as torch.distributions do)."""
    torch.manual_seed(20240517)
    return 20240517


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The `tiny` preset built from scratch in a temporary cache through the CLI: a first run is
    killed (SIGKILL to the whole process group) after 15 s, a second run resumes and finishes."""
    from mmkit.data import load_bundle

    cache = tmp_path_factory.mktemp("cache")
    card = cache / "card.md"
    cmd = [sys.executable, "-m", "mmkit", "build-data", "--preset", "tiny", "--cache", str(cache), "--card", str(card),
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    bundle = next(line.split(": ", 1)[1] for line in done.stdout.splitlines() if line.startswith("bundle: "))
    return {"cache": cache, "card": card, "last_line": done.stdout.strip().splitlines()[-1],
            "data": load_bundle(bundle)}


@pytest.fixture(scope="session")  # session scope: checked before the session-wide `tiny` build starts
def browser():
    """The system Chromium for the real-browser tests: skipped without one, except under CI=true."""
    from mmkit.app.browser import BrowserUnavailable, find_browser

    try:
        return find_browser()
    except BrowserUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: the browser test must run, but {exc}")
        pytest.skip(str(exc))
