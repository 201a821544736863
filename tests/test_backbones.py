"""CNN backbones over raw inputs (the `paper` setting): the raw-input loader on the real `tiny`
build, training end to end through the CLI, evaluation of the trained run, and clear errors."""
import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mmkit.data import BundleError
from mmkit.data.features import log_mel
from mmkit.data.raw import RAW_SHAPES, VOCAB_SIZE, raw_split, tokenize_captions
from mmkit.analysis.evaluate import evaluate_run
from mmkit.model.run import Run
from mmkit.model.factory import model_inputs
from oracles import log_normalizer, mean_resultant


@pytest.fixture(scope="module")
def raw_test(tiny):
    return raw_split(tiny["data"]["test"])


def test_raw_inputs_of_the_tiny_build(tiny, raw_test):
    split = tiny["data"]["test"]
    n = len(split)
    assert raw_test.raw == ("audio", "image", "text")
    assert {m: raw_test.features[m].shape for m in RAW_SHAPES} == {m: (n, *s) for m, s in RAW_SHAPES.items()}
    assert all(raw_test.features[m].dtype == np.float32 for m in RAW_SHAPES)
    # ink in [0, 1], with notes drawn on every page; log-mel rescaled to about unit range and not silent
    image, audio = raw_test.features["image"], raw_test.features["audio"]
    assert image.min() >= 0 and image.max() <= 1 and (image.reshape(n, -1).mean(1) > 0.01).all()
    assert -3 < audio.min() and audio.max() < 4 and (audio.reshape(n, -1).std(1) > 0.1).all()
    # the first frames are the pair means of the full-resolution log-mel of the same file
    import soundfile

    wav, rate = soundfile.read(str(split.media_path("audio", 0)), dtype="float32")
    mel = log_mel(wav, rate)
    np.testing.assert_allclose(audio[0, :, :3], (mel[:, :6].reshape(64, 3, 2).mean(-1) + 40) / 20, rtol=1e-5, atol=1e-5)
    # token ids: [CLS] first, ids inside the vocabulary, exact as float32, no two captions alike
    tokens = raw_test.features["text"]
    assert (tokens[:, 0] == 101).all() and tokens.max() < VOCAB_SIZE and (tokens == np.round(tokens)).all()
    assert len({row.tobytes() for row in tokens}) == n
    # the cached features of the bundle stay untouched; converting twice is a no-op
    assert split.features["image"].shape[1:] != RAW_SHAPES["image"] and split.raw == ()
    assert raw_split(raw_test).features["audio"] is raw_test.features["audio"]


def test_raw_inputs_of_absent_rows_are_zero_and_bad_media_are_named(tiny, tmp_path):
    split = tiny["data"]["val"]
    present = {m: v.copy() for m, v in split.present.items()}
    present["image"][1] = False
    out = raw_split(dataclasses.replace(split, present=present), ("image", "text"))
    assert not out.features["image"][1].any() and "audio" not in out.raw
    root = tmp_path / "bundle"
    shutil.copytree(split.root, root, symlinks=False)
    (root / split.media["audio"][2]).write_bytes(b"RIFF not really a wave file")
    broken = dataclasses.replace(split, root=root)
    with pytest.raises(BundleError, match=r"media_audio row 2: cannot read .*\.wav"):
        raw_split(broken, ("audio",))
    with pytest.raises(BundleError, match="captions"):
        raw_split(dataclasses.replace(split, captions=None), ("text",))
    assert tokenize_captions(["a fifth up"], length=6).tolist() == [[101, 1037, 3587, 2039, 102, 0]]


def test_backbones_train_end_to_end_and_evaluate(tiny, tmp_path):
    """`mmkit train --encoder backbones` on the tiny build: the CNNs learn (loss falls), the run
    reloads and encodes raw inputs, and the evaluation ranks its test split."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"backbone_width": 4, "hidden": 32, "layers": 1, "dim": 8, "n_samples": 4,
                                  "n_projections": 10, "lr": 3e-3}))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mmkit", "train", "--method", "proposed", "--encoder", "backbones", "--data",
           str(tiny["data"]["train"].root), "--epochs", "3", "--batch-size", "16", "--seed", "0",
           "--config", str(config), "--out", str(out), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    log = (out / "log.csv").read_text().splitlines()
    losses = [float(line.split(",")[1]) for line in log[1:]]
    assert len(losses) == 3 and losses[-1] < losses[0]
    cfg, model = Run(out).config, Run(out).load_model()
    assert cfg.encoder == "backbones" and set(model.backbones) == {"audio", "image", "text"}
    assert not any(name.startswith("input_mean") for name, _ in model.named_buffers())
    test = tiny["data"]["test"]
    assert model_inputs(model, test).raw == ("audio", "image", "text")
    result = evaluate_run(out, data=tiny["data"], distance="kl", store=False)
    # A->I ranked again from the run's encodings with -KL in closed form at 50 digits (tests/oracles.py)
    # and the tie rule of mmkit.core.metrics: every stored rank lies between the oracle's ranks with the
    # items within 1e-3 of the true item's KL counted as better or not (float32 rounding reaches 2e-5
    # here), and the MRR, R@1 and MR are those of the stored ranks
    enc = Run(out).encode(test)
    assert all(test.present[m].all() for m in ("audio", "image"))
    (q_loc, q_k), (g_loc, g_k) = ([t.double().numpy() for t in enc[m]] for m in ("audio", "image"))
    log_c = {float(k): log_normalizer(cfg.dim, float(k)) for k in (*q_k, *g_k)}
    kl = np.array([[log_c[float(kq)] - log_c[float(kg)] + mean_resultant(cfg.dim, float(kq)) * (kq - kg * (lq @ lg))
                    for lg, kg in zip(g_loc, g_k)] for lq, kq in zip(q_loc, q_k)])
    true = np.diag(kl)[:, None]
    lowest, highest = 1 + (kl < true - 1e-3).sum(1), (kl < true + 1e-3).sum(1)  # `highest` counts the true item
    task = result["tasks"]["A->I"]
    ranks = task["ranks"].numpy()
    assert task["n"] == len(test) and ((lowest <= ranks) & (ranks <= highest)).all()
    assert (lowest == highest).mean() > 0.8  # most queries have no near tie: their rank is fixed exactly
    assert task["MRR"] == pytest.approx(np.mean(1.0 / ranks), abs=1e-12)
    assert task["R@1"] == pytest.approx(100.0 * np.mean(ranks <= 1)) and task["MR"] == np.median(ranks)
