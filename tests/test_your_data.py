"""Your own data (issue 17): a folder of media -> bundle (build-data --from), precomputed embeddings ->
bundle (import-features), bad input named and skipped, kill and resume, and everything downstream
(train, evaluate, the widget, encoding new files) on such bundles.

The folder is the one the docs use, made by mmkit.data.user.example (12 works here, 36 in the docs)."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmkit.__main__ import main
from mmkit.core import faults
from mmkit.core.io import sha256_file
from mmkit.data import load_bundle
from mmkit.data.user.example import BAD_ROWS, make_example_folder
from mmkit.data.user.items import PROBLEM_KINDS, InputError, assign_splits
from mmkit.data.user.media import build_from_media
from mmkit.vocab import SPLITS

FRACTIONS = (0.5, 0.25, 0.25)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The example folder with its deliberately bad rows (items.csv)."""
    return make_example_folder(tmp_path_factory.mktemp("example") / "folder", n_works=12)


@pytest.fixture(scope="module")
def built(example, tmp_path_factory):
    """The example built uninterrupted, in process, skipping the bad rows."""
    base = tmp_path_factory.mktemp("built")
    summary = build_from_media(example, base / "bundle", cache=base / "cache", workers=1, skip_bad=True,
                               fractions=FRACTIONS, progress=False)
    return {"summary": summary, "cache": base / "cache", "bundle": Path(summary["bundle"]),
            "data": load_bundle(summary["bundle"])}


def _rows(data):
    """(split, row, FeatureSplit) of every item."""
    return [(s, r, part) for s, part in data.items() for r in range(len(part))]


def _same_bundle(a: Path, b: Path) -> None:
    """Two bundles hold equal arrays in every split file and byte-identical media."""
    for s in SPLITS:
        with np.load(a / f"{s}.npz") as fa, np.load(b / f"{s}.npz") as fb:
            assert sorted(fa.files) == sorted(fb.files)
            for k in fa.files:
                np.testing.assert_array_equal(fa[k], fb[k], err_msg=f"{s}.npz {k}")
    media_a = {p.name: sha256_file(p) for p in (a / "media").iterdir()}
    media_b = {p.name: sha256_file(p) for p in (b / "media").iterdir()}
    assert media_a == media_b


# ----------------------------------------------------------------------------------------------
# round trip: the features are the embedded dataset's
# ----------------------------------------------------------------------------------------------
def test_example_bundle_has_every_good_row_and_reports_every_bad_one(example, built):
    summary, data = built["summary"], built["data"]
    good = [line for line in example.read_text().splitlines()[1:] if line.split(",")[0] not in BAD_ROWS]
    assert summary["items"] == len(good) - 1  # the duplicate id repeats a good id
    kinds = {p["item"]: p["kind"] for p in summary["skipped"]}
    assert {k: v for k, v in kinds.items() if k in BAD_ROWS} == BAD_ROWS
    assert len(summary["skipped"]) == len(BAD_ROWS) + 1 and "duplicate-id" in kinds.values()
    card = (built["bundle"] / "card.md").read_text()
    for p in summary["skipped"]:
        assert f"{p['source']} {p['where']} | {p['item']} | {p['kind']}" in card
    # items without a score or a recording keep the other modalities
    present = {m: np.concatenate([data[s].present[m] for s in SPLITS]) for m in ("audio", "image", "text")}
    assert present["text"].all() and not present["audio"].all() and not present["image"].all()
    # groups (two takes of one work) never span two splits
    split_of = {}
    for s, part in data.items():
        for g in part.meta["group"]:
            assert split_of.setdefault(str(g), s) == s


def test_features_equal_those_of_the_embedded_dataset_code(example, built):
    """Every row's audio and image features are what mmkit.data.features.item_features computes for the
    bundle's media (the embedded dataset's reader), the text is MiniLM's vector of the caption, and a
    symbolic score's image is the embedded engraving of its first bars; new files encode the same."""
    import soundfile
    from music21 import converter

    from mmkit.analysis.new_material import features_from_audio_file, features_from_image_file
    from mmkit.data.embedded.corpus import cut_excerpt
    from mmkit.data.features import audio_features, image_features, item_features
    from mmkit.data.render import SAMPLE_RATE, engrave_svg, rasterize
    from mmkit.data.text_embed import embed_texts

    data, folder = built["data"], example.parent
    sources = {}
    for s in SPLITS:
        with np.load(built["bundle"] / f"{s}.npz") as f:
            sources[s] = (f["source_audio"], f["source_image"])
    checked = {"both": 0, "symbolic": 0, "new-audio": 0, "new-image": 0}
    tmp = folder.parent / "item-check"
    for s, r, part in _rows(data):
        a, i = part.media_path("audio", r), part.media_path("image", r)
        if a is not None and i is not None:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
            shutil.copyfile(a, tmp / "audio.wav")
            shutil.copyfile(i, tmp / "image.png")
            want_a, want_i = item_features(tmp, SAMPLE_RATE)
            np.testing.assert_array_equal(part.features["audio"][r], want_a)
            np.testing.assert_array_equal(part.features["image"][r], want_i)
            checked["both"] += 1
        elif a is not None:
            audio, sr = soundfile.read(a, dtype="float32")
            np.testing.assert_array_equal(part.features["audio"][r], audio_features(audio, sr)[0])
        np.testing.assert_array_equal(part.features["text"][r], embed_texts([str(part.captions[r])], batch_size=1)[0])
        source, audio_source = str(sources[s][1][r]), str(sources[s][0][r])
        if source.endswith((".musicxml", ".mid")):
            engraved = rasterize(engrave_svg(cut_excerpt(converter.parse(str(folder / source), forceSource=True))))
            from PIL import Image

            np.testing.assert_array_equal(np.asarray(Image.open(i).convert("L")), engraved)
            np.testing.assert_array_equal(part.features["image"][r], image_features(engraved))
            checked["symbolic"] += 1
        if source.endswith((".png", ".jpg")):
            np.testing.assert_array_equal(features_from_image_file(folder / source), part.features["image"][r])
            checked["new-image"] += 1
        if audio_source and not audio_source.endswith("(rendered)") and checked["new-audio"] < 3:
            np.testing.assert_array_equal(features_from_audio_file(folder / audio_source), part.features["audio"][r])
            checked["new-audio"] += 1
    assert checked["both"] >= 5 and checked["symbolic"] >= 3 and checked["new-image"] >= 3 and checked["new-audio"] == 3


def test_embedded_items_pass_through_unchanged(tmp_path, built):
    """Media made by the embedded build (mmkit.data.embedded.build.build_item), given as a user folder (WAV as is
    and converted to FLAC, the PNG, the caption) come out byte for byte and feature for feature."""
    import soundfile

    from mmkit.data.embedded.build import build_item
    from mmkit.data.embedded.corpus import list_works
    from mmkit.data.features import item_features
    from mmkit.data.render import SAMPLE_RATE
    from mmkit.data.text_embed import embed_texts

    works = list_works(("ryansMammoth",))[:8]
    items = []
    for w in works:
        d = tmp_path / "embedded" / w.key.replace("/", "_")
        if build_item(w.to_dict(), str(d))["status"] == "ok":
            items.append((w, d))
        if len(items) == 4:
            break
    folder = tmp_path / "folder"
    (folder / "m").mkdir(parents=True)
    lines = ["id,audio,score,caption,split"]
    for n, (w, d) in enumerate(items):
        meta = json.loads((d / "meta.json").read_text())
        audio = f"m/{n}.wav"
        if n % 2:
            pcm, sr = soundfile.read(d / "audio.wav", dtype="int16")
            soundfile.write(folder / f"m/{n}.flac", pcm, sr, format="FLAC", subtype="PCM_16")
            audio = f"m/{n}.flac"
        else:
            shutil.copyfile(d / "audio.wav", folder / audio)
        shutil.copyfile(d / "image.png", folder / f"m/{n}.png")
        lines.append(f'{w.key},{audio},m/{n}.png,"{meta["caption"]}",{SPLITS[min(n, 2)]}')
    (folder / "items.csv").write_text("\n".join(lines) + "\n")
    summary = build_from_media(folder / "items.csv", tmp_path / "bundle", cache=built["cache"], workers=1, progress=False)
    data = load_bundle(summary["bundle"])
    batch = embed_texts([json.loads((d / "meta.json").read_text())["caption"] for _, d in items])  # as the embedded build
    for n, (w, d) in enumerate(items):
        s = SPLITS[min(n, 2)]
        r = [str(i) for i in data[s].ids].index(w.key)
        want_a, want_i = item_features(d, SAMPLE_RATE)
        np.testing.assert_array_equal(data[s].features["audio"][r], want_a)
        np.testing.assert_array_equal(data[s].features["image"][r], want_i)
        assert sha256_file(data[s].media_path("audio", r)) == sha256_file(d / "audio.wav")
        assert sha256_file(data[s].media_path("image", r)) == sha256_file(d / "image.png")
        np.testing.assert_allclose(data[s].features["text"][r], batch[n], atol=1e-6)  # batching: ~1e-7


def test_symbolic_scores_rendered_to_audio_as_the_embedded_dataset(example, built, tmp_path):
    """--render-audio: an item with a symbolic score and no recording gets the embedded dataset's rendering
    (music21 -> MIDI on piano -> tinysoundfont, stored as its 16-bit WAV)."""
    import soundfile
    from music21 import converter

    from mmkit.data.embedded.corpus import cut_excerpt
    from mmkit.data.render import midi_bytes, synthesize

    folder = example.parent
    scores = sorted(p.name for p in (folder / "scores").iterdir() if p.suffix in (".musicxml", ".mid")
                    and "broken" not in p.name)[:3]
    lines = ["id,score,caption"] + [f"s{n},scores/{name},a caption {n}" for n, name in enumerate(scores)]
    (folder / "render.csv").write_text("\n".join(lines) + "\n")
    summary = build_from_media(folder / "render.csv", tmp_path / "b", cache=built["cache"], workers=1, render_audio=True,
                               fractions=(0.4, 0.3, 0.3), progress=False)
    assert summary["items"] == 3 and summary["modalities"] == ["audio", "image", "text"]
    data = load_bundle(tmp_path / "b")
    for s, r, part in _rows(data):
        name = scores[int(str(part.ids[r])[1:])]
        expected = (synthesize(midi_bytes(cut_excerpt(converter.parse(str(folder / "scores" / name),
                                                                      forceSource=True)))[0]) * 32767).astype(np.int16)
        got, sr = soundfile.read(part.media_path("audio", r), dtype="int16")
        np.testing.assert_array_equal(got, expected)
    without = build_from_media(folder / "render.csv", tmp_path / "c", cache=built["cache"], workers=1,
                               fractions=(0.4, 0.3, 0.3), progress=False)
    assert without["modalities"] == ["image", "text"]


def test_raw_backbone_inputs_and_a_backbones_run(built, tmp_path):
    from mmkit.data.raw import RAW_SHAPES, raw_split
    from mmkit.model.config import TrainConfig
    from mmkit.training.loop import fit

    part = raw_split(built["data"]["train"])
    for m in ("audio", "image", "text"):
        assert part.features[m].shape[1:] == RAW_SHAPES[m]
        assert np.abs(part.features[m][part.present[m]]).sum() > 0
    summary = fit(TrainConfig(method="baseline", encoder="backbones", epochs=1, batch_size=4, seed=0), built["data"],
                  tmp_path / "run", progress=False)
    assert np.isfinite(summary["history"][0]["loss"])


def test_split_assignment_is_leak_free_deterministic_and_fills_every_split():
    groups = [f"g{i // 2}" for i in range(20)] + ["solo"]
    a, conflicts = assign_splits(groups, [None] * 21, seed=0)
    assert not conflicts and a == assign_splits(groups, [None] * 21, seed=0)[0]
    assert set(a) == set(SPLITS)
    for g in set(groups):
        assert len({s for s, h in zip(a, groups) if h == g}) == 1
    given = [None] * 21
    given[0] = "test"
    b, _ = assign_splits(groups, given, seed=0)
    assert b[0] == b[1] == "test"  # the rest of a group follows its given split
    small, _ = assign_splits(["a", "b", "c"], [None] * 3, seed=0, fractions=(0.8, 0.1, 0.1))
    assert sorted(small) == sorted(SPLITS)
    _, conflicts = assign_splits(["a", "a"], ["train", "test"])
    assert conflicts == [1]


# ----------------------------------------------------------------------------------------------
# bad input: named, skipped and reported
# ----------------------------------------------------------------------------------------------
def _good_rows(example) -> list[str]:
    """The first six items of the example (their media, a short caption, each its own group)."""
    import csv

    rows = list(csv.reader(example.read_text().splitlines()))[1:7]
    return [f"{r[0]},{r[1]},{r[2]},a caption for {r[0]},," for r in rows]


def _bad_case(folder: Path, kind: str) -> list[str]:
    """Rows (id,audio,score,caption,group,split) with one problem of ``kind``; files created as needed."""
    from PIL import Image

    if kind == "missing-file":
        return ["x,audio/nope.wav,,a caption,,"]
    if kind == "unreadable-file":
        (folder / "audio/garbage.wav").write_bytes(b"RIFF not really a wave file" * 10)
        return ["x,audio/garbage.wav,,a caption,,"]
    if kind == "escaping-path":
        link = folder / "audio/link.wav"
        if not link.is_symlink():
            link.symlink_to(folder.parent / "outside.wav")
        return ["x,audio/link.wav,,a caption,,"]
    if kind == "unsupported-format":
        (folder / "scores/score.pdf").write_bytes(b"%PDF-1.4")
        return ["x,,scores/score.pdf,a caption,,"]
    if kind == "silent-audio":
        return ["x,audio/silence.wav,,a caption,,"]
    if kind == "unparseable-score":
        return ["x,,scores/broken.musicxml,a caption,,"]
    if kind == "blank-image":
        Image.new("L", (600, 150), 255).save(folder / "scores/blank.png")
        return ["x,,scores/blank.png,a caption,,"]
    if kind == "empty-caption":
        return ["x,,,captions/empty.txt,,"]
    if kind == "duplicate-id":
        return ["x,,,a caption,,", "x,,,another caption,,"]
    if kind == "empty-id":
        return [",,,a caption,,"]
    if kind == "no-modality":
        return ["x,,,,,"]
    if kind == "bad-split":
        return ["x,,,a caption,,training"]
    if kind == "split-conflict":
        return ["x,,,a caption,G,train", "y,,,a caption,G,test"]
    raise AssertionError(kind)


CSV_KINDS = ["missing-file", "unreadable-file", "escaping-path", "unsupported-format", "silent-audio",
             "unparseable-score", "blank-image", "empty-caption", "duplicate-id", "empty-id", "no-modality",
             "bad-split", "split-conflict"]


@pytest.mark.parametrize("kind", CSV_KINDS)
def test_bad_csv_row_is_named_and_skipped(kind, example, built, tmp_path):
    folder = example.parent
    rows = _bad_case(folder, kind)
    csv_path = folder / f"case-{kind}.csv"
    lines = ["id,audio,score,caption,group,split"] + _good_rows(example) + rows
    csv_path.write_text("\n".join(lines) + "\n")
    bad_line = len(lines)  # the (last) bad row; the header is line 1
    with pytest.raises(InputError) as info:
        build_from_media(csv_path, tmp_path / "strict", cache=built["cache"], workers=1, fractions=(0.4, 0.3, 0.3),
                         progress=False)
    assert [(p.kind, p.where) for p in info.value.problems] == [(kind, f"line {bad_line}")]
    assert f"case-{kind}.csv line {bad_line}" in str(info.value) and kind in str(info.value)
    assert not (tmp_path / "strict" / "manifest.json").exists()
    summary = build_from_media(csv_path, tmp_path / "lenient", cache=built["cache"], workers=1, skip_bad=True,
                               fractions=(0.4, 0.3, 0.3), progress=False)
    assert [(p["kind"], p["where"]) for p in summary["skipped"]] == [(kind, f"line {bad_line}")]
    assert summary["items"] == 6 + len(rows) - 1
    card = (tmp_path / "lenient" / "card.md").read_text()
    assert f"case-{kind}.csv line {bad_line}" in card and kind in card
    assert kind in PROBLEM_KINDS


def test_cli_names_bad_rows_and_skips_them(example, built, tmp_path, capsys):
    args = ["build-data", "--from", str(example), "--out", str(tmp_path / "b"), "--cache", str(built["cache"]),
            "--workers", "1", "--no-progress", "--split-fractions", "0.5,0.25,0.25"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "items.csv line" in err and "duplicate-id" in err and "--skip-bad" in err
    assert main(args + ["--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert out.count("  skipped items.csv line") == len(BAD_ROWS) + 1
    _same_bundle(tmp_path / "b", built["bundle"])


def test_example_generator_writes_inside_its_folder_only(tmp_path):
    """Everything the generator writes lies under OUT (three works, with the bad rows); the escaping
    row still names a path outside, which read_items refuses before looking for the file."""
    from mmkit.data.user.items import read_items

    csv_path = make_example_folder(tmp_path / "out", n_works=3)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    _, problems, _ = read_items(csv_path)
    assert [(p.item, p.kind) for p in problems if p.kind == "escaping-path"] == [("bad-escaping-path", "escaping-path")]
    assert "../outside.wav" in csv_path.read_text() and not (tmp_path / "outside.wav").exists()


def _small_folder(folder: Path, audio_cells: list[str], header: str = "id,audio,score,caption") -> Path:
    """An items CSV of six rows (id, audio from ``audio_cells`` cycled, no score, a caption), and the
    files it names: ``tone.wav`` a 440 Hz tone, ``garbage.wav`` not audio at all, ``not-an-image.png`` text."""
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(16000) / 16000
    soundfile.write(folder / "tone.wav", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    (folder / "garbage.wav").write_bytes(b"RIFF not really a wave file" * 10)
    (folder / "not-an-image.png").write_text("a text file named like an image\n")
    rows = [f"item{i},{audio_cells[i % len(audio_cells)]},,caption number {i}" for i in range(6)]
    path = folder / "items.csv"
    path.write_text("\n".join([header] + rows) + "\n")
    return path


@pytest.mark.parametrize("header, typo, hint", [("id,audio,score,captions", "captions", "caption"),
                                                ("ID,Audio,Score,Text", "Text", "caption"),
                                                ("id,audio,score,caption,grupo", "grupo", "group")])
def test_a_misspelt_column_is_an_error_with_a_hint(header, typo, hint, tmp_path, capsys):
    csv_path = _small_folder(tmp_path / "f", ["tone.wav"], header)
    with pytest.raises(InputError) as info:
        build_from_media(csv_path, tmp_path / "out", cache=tmp_path / "cache", workers=1, progress=False)
    assert [p.kind for p in info.value.problems] == ["unknown-column"]
    assert f"column {typo!r} is not one mmkit reads; did you mean {hint!r}?" in str(info.value)
    args = ["build-data", "--from", str(csv_path), "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
            "--no-progress", "--skip-bad"]
    assert main(args) == 2  # --skip-bad does not skip a header problem
    err = capsys.readouterr().err
    assert f"did you mean {hint!r}?" in err and str(tmp_path) not in err
    assert not (tmp_path / "out").exists()


def test_an_unknown_column_beside_the_known_one_is_a_loud_warning(tmp_path, capsys):
    from mmkit.data.user.items import ColumnWarning, read_items

    csv_path = _small_folder(tmp_path / "f", ["tone.wav"], "id,audio,score,caption,captions,composer")
    with pytest.warns(ColumnWarning) as record:
        rows, problems, ignored = read_items(csv_path)
    assert len(rows) == 6 and not problems and ignored == ["captions", "composer"]
    messages = [str(w.message) for w in record]
    assert any("'captions' is ignored (it looks like 'caption', which is also present)" in m for m in messages)
    assert any("'composer' is ignored" in m for m in messages)
    # the CLI says it on stderr (whatever the outcome), not as a Python warning with a source line
    main(["build-data", "--from", str(csv_path), "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
          "--no-progress", "--split-fractions", "0.34,0.33,0.33", "--workers", "1"])
    err = capsys.readouterr().err
    assert "warning: items.csv: column 'captions' is ignored" in err and "ColumnWarning" not in err


@pytest.mark.parametrize("cells, why", [(["garbage.wav", ""], "all 3 rows with a cell in the 'audio' column were left out "
                                         "(3 unreadable-file: line 2, line 4, line 6)"),
                                        ([""], "the 'audio' column is empty in every row")])
def test_a_modality_that_vanishes_entirely_is_an_error(cells, why, tmp_path):
    csv_path = _small_folder(tmp_path / "f", cells)
    with pytest.raises(InputError) as info:
        build_from_media(csv_path, tmp_path / "out", cache=tmp_path / "cache", workers=1, skip_bad=True,
                         fractions=(0.34, 0.33, 0.33), progress=False)
    first = info.value.problems[0]
    assert first.kind == "vanished-modality" and "no item keeps the audio modality" in first.reason
    assert why in first.reason
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_decoding_errors_give_the_real_reason_without_paths_or_library_warnings(tmp_path, capfd):
    import warnings

    csv_path = _small_folder(tmp_path / "f", ["tone.wav", "garbage.wav"])
    csv_path.write_text(csv_path.read_text().replace("item0,tone.wav,", "item0,tone.wav,not-an-image.png"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InputError) as info:
            build_from_media(csv_path, tmp_path / "out", cache=tmp_path / "cache", workers=1, progress=False)
    assert not [w for w in caught if "librosa" in str(w.filename) or "audioread" in str(w.message)], caught
    reasons = {p.item: p.reason for p in info.value.problems}
    # libsndfile's own reason comes first, audioread's giving up after it
    assert "LibsndfileError: Format not recognised" in reasons["item1"]
    assert "NoBackendError: The file could not be decoded by any backend" in reasons["item1"]
    assert "cannot identify image file 'not-an-image.png'" in reasons["item0"]
    assert str(tmp_path) not in str(info.value) and "/" not in reasons["item0"]
    # in a separate process, as a user runs it (the bad rows only: nothing to compute features of):
    # the error message, no warnings on the terminal
    bad = csv_path.with_name("bad.csv")
    bad.write_text("id,audio,score,caption\nitem1,garbage.wav,,a caption\nitem2,,not-an-image.png,another\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "mmkit", "build-data", "--from", str(bad), "--out",
                           str(tmp_path / "out2"), "--cache", str(tmp_path / "cache2"), "--no-progress", "--workers", "1"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "Warning" not in proc.stderr and str(tmp_path) not in proc.stderr, proc.stderr
    assert "Format not recognised" in proc.stderr and "cannot identify image file 'not-an-image.png'" in proc.stderr
    assert proc.stdout == ""


# ----------------------------------------------------------------------------------------------
# kill -9 mid-build and resume; an edited row rebuilds only itself
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_killed_build_resumes_to_the_uninterrupted_bundle(example, built, tmp_path):
    out, cache = tmp_path / "bundle", tmp_path / "cache"
    cmd = [sys.executable, "-m", "mmkit", "build-data", "--from", str(example), "--out", str(out), "--cache", str(cache),
           "--skip-bad", "--workers", "1", "--no-progress", "--split-fractions", "0.5,0.25,0.25"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # 1) SIGKILL half-way through writing the 4th normalised score image
    first = subprocess.run(cmd, env={**env, faults.ENV: "write:file=image.png:after-bytes=1000:nth=4"},
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    assert not (out / "manifest.json").exists()
    assert list(cache.rglob(".image.png.*.tmp"))  # the killed write left its temporary, never image.png itself
    # 2) resume, SIGKILL while writing the bundle's test split
    second = subprocess.run(cmd, env={**env, faults.ENV: "write:file=test.npz:after-bytes=1000"},
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == -signal.SIGKILL, second.stderr[-2000:]
    assert not (out / "manifest.json").exists() and (out / "train.npz").exists()
    # 3) resume to the end
    third = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stderr[-2000:]
    load_bundle(out)
    _same_bundle(out, built["bundle"])
    assert not [p for p in out.rglob(".*.tmp")]
    card = (out / "card.md").read_text()
    assert "0 media file(s) processed in this run" in card  # everything came from the resumed cache


def test_an_edited_row_rebuilds_only_itself(example, built, tmp_path):
    import soundfile

    folder = example.parent
    lines = example.read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if line.split(",")[1].endswith(".wav") and not line.startswith("bad-")
               and i > 0)
    item, audio = lines[row].split(",")[:2]
    y, sr = soundfile.read(folder / audio, dtype="float32")
    soundfile.write(folder / "audio/edited.wav", y[: len(y) // 2] * 0.5, sr)
    lines[row] = lines[row].replace(audio, "audio/edited.wav", 1)
    (folder / "edited.csv").write_text("\n".join(lines) + "\n")
    summary = build_from_media(folder / "edited.csv", tmp_path / "edited", cache=built["cache"], workers=1,
                               skip_bad=True, fractions=FRACTIONS, progress=False)
    assert summary["rendered"] == 1  # only the new recording was processed
    data = load_bundle(tmp_path / "edited")
    for s in SPLITS:
        before, after = built["data"][s], data[s]
        assert before.ids.tolist() == after.ids.tolist()  # editing media never moves an item to another split
        for r, i in enumerate(after.ids):
            changed = not np.array_equal(before.features["audio"][r], after.features["audio"][r])
            assert changed == (str(i) == item), i
            np.testing.assert_array_equal(before.features["image"][r], after.features["image"][r])


# ----------------------------------------------------------------------------------------------
# precomputed embeddings
# ----------------------------------------------------------------------------------------------
def _write_parquet(path: Path, columns: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory):
    """A synthetic bundle exported as the files a user brings: audio in .npz (with missing rows),
    image in a Parquet list column (nulls for missing rows), text in .npy, ids in .txt, splits in .csv."""
    from mmkit.data import make_synthetic_bundle

    base = tmp_path_factory.mktemp("embeddings")
    syn = load_bundle(make_synthetic_bundle(base / "syn", n_items=(160, 48, 48), dims={"audio": 24, "image": 32, "text": 16},
                                            missing_rate=0.1, seed=3))
    cat = {k: np.concatenate([getattr(syn[s], "ids") if k == "ids" else syn[s].features[k] for s in SPLITS])
           for k in ("ids", "audio", "image", "text")}
    present = {m: np.concatenate([syn[s].present[m] for s in SPLITS]) for m in ("audio", "image", "text")}
    splits = np.concatenate([[s] * len(syn[s]) for s in SPLITS])
    files = base / "files"
    files.mkdir()
    np.savez(files / "clap.npz", audio=cat["audio"], audio_present=present["audio"])
    image_cells = [row.tolist() if p else None for row, p in zip(cat["image"], present["image"])]
    _write_parquet(files / "clip.parquet", {"id": cat["ids"].tolist(), "image": image_cells})
    text = cat["text"].copy()
    np.save(files / "text.npy", text)
    (files / "ids.txt").write_text("\n".join(cat["ids"]) + "\n")
    (files / "meta.csv").write_text("id,split\n" + "".join(f"{i},{s}\n" for i, s in zip(cat["ids"], splits)))
    return {"syn": syn, "files": files, "cat": cat, "present": present, "base": base}


def _import_args(files: Path, out: Path) -> list[str]:
    return ["import-features", "--out", str(out), "--audio", str(files / "clap.npz"),
            "--image", str(files / "clip.parquet"), "--text", str(files / "text.npy"), "--ids", str(files / "ids.txt"),
            "--splits", str(files / "meta.csv") + ":split", "--no-progress"]


def test_imported_embeddings_round_trip_and_train(embeddings, tmp_path):
    from mmkit.model.config import TrainConfig
    from mmkit.training.loop import fit

    out = tmp_path / "imported"
    assert main(_import_args(embeddings["files"], out)) == 0
    data = load_bundle(out)
    for s in SPLITS:
        syn, got = embeddings["syn"][s], data[s]
        assert got.ids.tolist() == syn.ids.tolist()
        for m in ("audio", "image"):  # .npz and Parquet say which rows lack the modality
            np.testing.assert_array_equal(got.present[m], syn.present[m])
            np.testing.assert_array_equal(got.features[m][got.present[m]], syn.features[m][syn.present[m]])
        assert got.present["text"].all()  # a plain .npy has every row
        np.testing.assert_array_equal(got.features["text"], syn.features["text"])
    summary = fit(TrainConfig(method="proposed", epochs=6, batch_size=32, hidden=32, dim=8, seed=0), data,
                  tmp_path / "run", progress=False, data_spec=str(out))
    losses = [h["loss"] for h in summary["history"]]
    assert losses[-1] < 0.9 * losses[0], losses
    # the widget session opens on it, headless
    from mmkit.app.widgets import RetrievalApp, RetrievalSession

    session = RetrievalSession(data["test"], {"mine": str(tmp_path / "run")})
    ranking = session.rank({"audio": str(data["test"].ids[np.flatnonzero(data["test"].present["audio"])[0]])}, "image",
                           "kl", k=5)
    assert len(ranking.ids) == 5
    app = RetrievalApp(session, target="image", distance="kl", k=5)
    assert not app.errors and app.rankings["mine"].ids


def test_frame_level_embeddings_from_npz_and_parquet(tmp_path):
    from mmkit.data.user.imports import import_features

    rng = np.random.default_rng(0)
    n, t, d = 30, 5, 6
    x = rng.normal(size=(n, t, d)).astype(np.float32)
    lengths = rng.integers(1, t + 1, size=n)
    ids = [f"item{i}" for i in range(n)]
    np.savez(tmp_path / "a.npz", audio=x, audio_lengths=lengths)
    cells = [x[i, :lengths[i]].tolist() for i in range(n)]
    _write_parquet(tmp_path / "b.parquet", {"id": ids, "frames": cells})
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    import_features(tmp_path / "out", {"audio": tmp_path / "a.npz", "image": f"{tmp_path / 'b.parquet'}:frames"},
                    ids=tmp_path / "ids.txt", progress=False)
    data = load_bundle(tmp_path / "out")
    for s in SPLITS:
        rows = [ids.index(str(i)) for i in data[s].ids]
        np.testing.assert_array_equal(data[s].lengths["audio"], lengths[rows])
        np.testing.assert_array_equal(data[s].lengths["image"], lengths[rows])
        for k, r in enumerate(rows):
            np.testing.assert_array_equal(data[s].features["image"][k, :lengths[r]], x[r, :lengths[r]])
            np.testing.assert_array_equal(data[s].features["audio"][k, :lengths[r]], x[r, :lengths[r]])


IMPORT_KINDS = ["nan-vector", "dimension-mismatch", "duplicate-id", "empty-id", "empty-caption", "bad-split",
                "unknown-id"]


@pytest.mark.parametrize("kind", IMPORT_KINDS)
def test_bad_embedding_row_is_named_and_skipped(kind, tmp_path):
    from mmkit.data.user.imports import import_features

    rng = np.random.default_rng(1)
    n, bad = 40, 17
    ids = [f"item{i}" for i in range(n)]
    audio = rng.normal(size=(n, 8)).astype(np.float32)
    image = [rng.normal(size=12).tolist() for _ in range(n)]
    captions = [f"caption {i}" for i in range(n)]
    splits = [""] * n
    items = None
    if kind == "nan-vector":
        audio[bad, 3] = np.nan
    elif kind == "dimension-mismatch":
        image[bad] = image[bad][:11]
    elif kind == "duplicate-id":
        ids[bad] = ids[2]
    elif kind == "empty-id":
        ids[bad] = ""
    elif kind == "empty-caption":
        captions[bad] = "..."
    elif kind == "bad-split":
        splits[bad] = "holdout"
    elif kind == "unknown-id":
        items = tmp_path / "items.csv"
        items.write_text("id,caption\nitem1,a caption\nnobody,someone else's caption\n")
    np.save(tmp_path / "audio.npy", audio)
    _write_parquet(tmp_path / "e.parquet", {"id": ids, "image": image, "caption": captions, "split": splits})
    sources = {"audio": tmp_path / "audio.npy", "image": tmp_path / "e.parquet"}
    extra = ({"items": items} if items else {"captions": f"{tmp_path / 'e.parquet'}:caption",
                                             "splits": f"{tmp_path / 'e.parquet'}:split"})
    with pytest.raises(InputError) as info:
        import_features(tmp_path / "strict", sources, ids=f"{tmp_path / 'e.parquet'}:id", progress=False, **extra)
    where = "line 3" if kind == "unknown-id" else f"row {bad}"
    assert [(p.kind, p.where) for p in info.value.problems] == [(kind, where)]
    assert where in str(info.value)
    summary = import_features(tmp_path / "lenient", sources, ids=f"{tmp_path / 'e.parquet'}:id", skip_bad=True,
                              progress=False, **extra)
    assert [(p["kind"], p["where"]) for p in summary["skipped"]] == [(kind, where)]
    assert summary["items"] == (n if kind == "unknown-id" else n - 1)
    assert where in (tmp_path / "lenient" / "card.md").read_text()


def test_a_file_with_another_row_count_is_an_error(tmp_path):
    from mmkit.data.user.imports import import_features

    np.save(tmp_path / "a.npy", np.zeros((10, 4), np.float32))
    (tmp_path / "ids.txt").write_text("\n".join(f"i{k}" for k in range(9)) + "\n")
    with pytest.raises(InputError, match=r"a.npy file: dimension-mismatch: 10 rows, but 9 ids"):
        import_features(tmp_path / "out", {"audio": tmp_path / "a.npy"}, ids=tmp_path / "ids.txt", skip_bad=True)


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path, monkeypatch):
    from mmkit.data.user.imports import import_features

    (tmp_path / "e.parquet").write_bytes(b"PAR1")
    (tmp_path / "ids.txt").write_text("a\n")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"pip install 'mmkit\[parquet\]'"):
        import_features(tmp_path / "out", {"audio": tmp_path / "e.parquet"}, ids=tmp_path / "ids.txt")


# ----------------------------------------------------------------------------------------------
# downstream: train, evaluate, the widget with the user's media, encoding new files, reproduce
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(built, tmp_path_factory):
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", "--data", str(built["bundle"]), "--method", "proposed", "--epochs", "4", "--batch-size", "4",
                 "--seed", "0", "--out", str(run), "--no-progress"]) == 0
    return run


def test_evaluate_and_the_widget_show_the_users_media(built, trained, tmp_path):
    from mmkit.app.widgets import RetrievalApp, RetrievalSession

    assert main(["evaluate", "--runs", str(trained), "--split", "test", "--distance", "kl",
                 "--csv", str(tmp_path / "eval.csv")]) == 0
    assert (tmp_path / "eval.csv").read_text().count("\n") > 1
    data = built["data"]["train"]
    session = RetrievalSession(data, {"mine": str(trained)})
    app = RetrievalApp(session, target="text", distance="kl", k=3)
    assert not app.errors
    row = next(r for r in range(len(data)) if data.present["audio"][r] and data.present["image"][r])
    app.select("audio", str(data.ids[row]))
    view = app.pickers["audio"].media
    assert view.audio.value == data.media_path("audio", row).read_bytes() and view.audio.format == "wav"
    image_view = app.pickers["image"].media
    assert image_view.image.value == data.media_path("image", row).read_bytes() and image_view.image.format == "png"


def test_encode_new_files_against_the_users_model(example, built, trained):
    import torch

    from mmkit.analysis.new_material import encode_files
    from mmkit.model.run import Run

    run = Run(trained)
    model = run.load_model()
    part = built["data"]["train"]
    sources = np.load(part.root / "train.npz")["source_audio"]
    row = next(r for r, s in enumerate(sources) if s and not s.endswith("(rendered)"))
    enc = run.encode(part)
    got = encode_files(model, [example.parent / str(sources[row])])
    loc, kappa = got["audio"]
    torch.testing.assert_close(loc[0], enc["audio"][0][row])
    torch.testing.assert_close(kappa[0], enc["audio"][1][row])
    score = next(p for p in (example.parent / "scores").iterdir() if p.suffix == ".musicxml" and "broken" not in p.name)
    assert set(encode_files(model, [score])) == {"image", "audio"}


def test_reproduce_plans_on_a_user_bundle(built):
    from mmkit.pipeline.reproduce import plan

    steps = plan("smoke", data=str(built["bundle"]))
    assert all(s.parameters.get("data", str(built["bundle"])) == str(built["bundle"]) for s in steps)
    assert {s.parameters.get("dataset_name") for s in steps if "dataset_name" in s.parameters} == {"bundle"}


@pytest.mark.slow
def test_dataset_notebook_browses_the_users_bundle(built, tmp_path):
    import nbformat

    from mmkit.app.notebook import notebook_path, run_notebook

    out = run_notebook(notebook_path("01_dataset.ipynb"), tmp_path / "01.ipynb",
                       {"data": str(built["bundle"]), "split": "train", "n_show": 2}, progress=False)
    text = json.dumps(nbformat.read(out, as_version=4))
    assert "audio/wav" in text or "Audio" in text


@pytest.mark.slow
def test_widget_on_imported_embeddings_in_chromium(browser, embeddings, tmp_path):
    """The retrieval demo notebook in JupyterLab + chromium on an imported-embeddings bundle: the ids it
    shows are those mmkit.retrieval.scores ranks."""
    from mmkit.app.browser import demo_page
    from mmkit.model.config import TrainConfig
    from mmkit.model.run import Run, encode_split
    from mmkit.training.loop import fit
    from retrieval_oracle import expected_top_ids

    out = tmp_path / "imported"
    assert main(_import_args(embeddings["files"], out)) == 0
    data = load_bundle(out)
    fit(TrainConfig(method="proposed", epochs=3, batch_size=32, hidden=32, dim=8, seed=0), data, tmp_path / "run",
        progress=False, data_spec=str(out))
    test = data["test"]
    enc = encode_split(Run(tmp_path / "run").load_model(), test)
    first = next(str(i) for r, i in enumerate(test.ids) if test.present["audio"][r] and test.present["text"][r])
    with demo_page({"Mine": tmp_path / "run"}, data=str(out), split="test", target="image", distance="kl", k=5) as demo:
        state = demo.state("Mine")
        assert state["error"] == "" and state["target"] == "image"
        query = state["query"]
        assert state["ids"] == expected_top_ids(enc, test, query, "image", "kl", 5)
        demo.search("audio", first)
        state = demo.state("Mine")
        assert state["ids"] == expected_top_ids(enc, test, state["query"], "image", "kl", 5)
