"""The embedded music21 dataset: a real `tiny` build from scratch (the `tiny` fixture of conftest.py:
interrupted once with kill -9, then resumed), alignment of the three modalities, leak-free
deterministic splits, cache corruption recovery, and browsing."""
from pathlib import Path

import numpy as np
import pytest

from mmkit.data import load_bundle
from mmkit.data.browse import list_triplets, show_triplet, triplet
from mmkit.data.embedded.build import _item_dir, build_dataset, select_works
from mmkit.data.render import AUDIO_SECONDS, IMAGE_SHAPE, SAMPLE_RATE


def test_cli_summary_line_and_card(tiny):
    fields = dict(kv.split("=") for kv in tiny["last_line"].split())
    assert set(fields) == {"items", "train", "val", "test", "skipped", "seconds"}
    assert int(fields["items"]) == sum(int(fields[s]) for s in ("train", "val", "test")) >= 140
    text = tiny["card"].read_text()
    assert "Items per collection and split" in text and "best R@1" in text


def test_modalities_are_aligned(tiny):
    for split in tiny["data"].values():
        assert split.modalities == ("audio", "image", "text")
        assert split.features["text"].shape[1] == 384
        for row in range(0, len(split), 7):
            t = triplet(split, row)
            assert t.sample_rate == SAMPLE_RATE and len(t.audio) == int(SAMPLE_RATE * AUDIO_SECONDS)
            assert np.sqrt(np.mean(t.audio**2)) > 1e-3  # not silent
            assert t.image.shape == IMAGE_SHAPE and (t.image < 128).mean() > 0.002  # not blank


def test_audio_duration_matches_the_excerpt(tiny):
    """The sounding part of each rendering lasts as long as the excerpt at its tempo (plus release)."""
    import json

    split = tiny["data"]["train"]
    for row in range(0, len(split), 9):
        meta = json.loads((_item_dir(tiny["cache"], str(split.ids[row])) / "meta.json").read_text())
        expected = meta["quarter_length"] * 60.0 / meta["bpm"]
        audio = triplet(split, row).audio
        loud = np.flatnonzero(np.abs(audio) > 0.01)
        sounding = (loud[-1] + 1) / SAMPLE_RATE
        assert expected <= AUDIO_SECONDS - 0.5 + 1e-6
        assert expected - 0.6 <= sounding <= expected + 2.0, (split.ids[row], expected, sounding)


def test_captions_never_contain_the_title(tiny):
    from mmkit.data.embedded.corpus import list_works

    titles = {w.key: w.title for w in list_works(("essenFolksong", "oneills1850", "ryansMammoth", "airdsAirs"))}
    checked = 0
    for split in tiny["data"].values():
        for i, c in zip(split.ids, split.captions):
            title = titles[str(i)].split("--")[0].strip()
            if len(title) >= 6 and len(title.split()) >= 2:
                assert title.lower() not in c.lower(), (i, title, c)
                checked += 1
    assert checked > 10


def test_splits_are_deterministic_and_leak_free(tiny):
    data = tiny["data"]
    groups = {s: set(np.load(Path(data[s].root) / f"{s}.npz")["group"].tolist()) for s in data}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"]) \
        and not (groups["val"] & groups["test"])
    again = build_dataset("tiny", cache=tiny["cache"], progress=False)
    assert again["rendered"] == 0  # everything came from the cache
    reloaded = load_bundle(again["bundle"])
    for s in data:
        assert reloaded[s].ids.tolist() == data[s].ids.tolist()
    assert [w.key for w in select_works("tiny")] == [w.key for w in select_works("tiny")]


def test_corrupt_and_interrupted_cache_entries_are_rebuilt(tiny):
    data = tiny["data"]
    key = str(data["train"].ids[0])
    item = _item_dir(tiny["cache"], key)
    image = item / "image.png"
    original = image.read_bytes()
    raw = bytearray(original)
    raw[len(raw) // 2] ^= 0xFF
    image.write_bytes(bytes(raw))                       # corrupt file
    other = _item_dir(tiny["cache"], str(data["test"].ids[0]))
    (other / "ok.json").unlink()                        # item whose run was interrupted before it finished
    summary = build_dataset("tiny", cache=tiny["cache"], progress=False)
    assert summary["rebuilt_corrupt"] == 1 and summary["rendered"] == 2
    assert image.read_bytes() == original                # rendering is deterministic
    assert (other / "ok.json").is_file()
    # the bundle's hard-linked media shared the corrupted bytes: it is assembled again, not reused
    media = Path(summary["bundle"]) / "media" / f"{item.name}.png"
    assert not summary["bundle_reused"] and media.read_bytes() == original
    again = build_dataset("tiny", cache=tiny["cache"], progress=False)
    assert again["bundle_reused"] and {k: again[k] for k in ("train", "val", "test")} == \
        {k: summary[k] for k in ("train", "val", "test")}
    npz = Path(again["bundle"]) / "val.npz"
    npz.write_bytes(npz.read_bytes()[:-10])             # a truncated split file is never reused
    assert not build_dataset("tiny", cache=tiny["cache"], progress=False)["bundle_reused"]
    reloaded = load_bundle(again["bundle"])
    np.testing.assert_allclose(reloaded["val"].features["text"], data["val"].features["text"], atol=1e-6)


def test_browse_helpers(tiny):
    split = tiny["data"]["test"]
    rows = list_triplets(split, limit=3)
    assert len(rows) == 3 and rows[0][1] == str(split.ids[0])
    box = show_triplet(split, 0)
    assert len(box.children) == 3  # caption, audio player, image
