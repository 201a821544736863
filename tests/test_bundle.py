"""User feature bundles: round trip, dequantisation, frame-level data, and every validation error."""
import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mmkit.data import BundleError, TripletDataset, collate_triplets, load_bundle, make_synthetic_bundle, save_bundle


def test_synthetic_round_trip_and_loader(tmp_path):
    root = make_synthetic_bundle(tmp_path / "b", n_items=(40, 10, 12), missing_rate=0.2, seed=1)
    data = load_bundle(root)
    assert [len(data[s]) for s in ("train", "val", "test")] == [40, 10, 12]
    train = data["train"]
    assert train.modalities == ("audio", "image", "text") and train.feature_dim("image") == 256
    assert not all(train.present["audio"])
    ds = TripletDataset(train)
    batch = next(iter(DataLoader(ds, batch_size=8, collate_fn=collate_triplets)))
    assert batch["audio"].shape == (8, 128) and batch["present"]["text"].dtype == torch.bool
    direct = ds.batch(range(8))
    assert torch.equal(direct["image"], batch["image"])
    missing = ~direct["present"]["audio"]
    assert (direct["audio"][missing] == 0).all()


def test_quantized_frame_level_audio(tmp_path):
    root = make_synthetic_bundle(tmp_path / "q", n_items=(20, 5, 5), quantize_audio=True, frames=6, seed=2)
    with np.load(root / "train.npz") as raw:
        assert raw["audio"].dtype == np.uint8 and raw["audio"].shape == (20, 6, 128)
        q = raw["audio"][0, 0, 0]
    data = load_bundle(root)
    a = data["train"].features["audio"]
    assert a.dtype == np.float32 and a.min() >= -2.0 and a.max() <= 2.0
    assert np.isclose(a[0, 0, 0], q * 4.0 / 255.0 - 2.0)
    assert data["train"].lengths["audio"].max() <= 6
    batch = TripletDataset(data["train"]).batch([0, 1])
    assert batch["lengths"]["audio"].shape == (2,)


def _write(tmp_path, **overrides):
    """A valid two-modality bundle with one field of one split overridden (None deletes it)."""
    n = 4
    base = {"ids": np.array([f"x{i}" for i in range(n)]), "audio": np.zeros((n, 3), np.float32),
            "text": np.ones((n, 2), np.float32)}
    splits = {}
    for s, off in zip(("train", "val", "test"), (0, 10, 20)):
        arrays = dict(base, ids=np.array([f"x{off + i}" for i in range(n)]))
        if s == "train":
            for k, v in overrides.items():
                if v is None:
                    arrays.pop(k)
                else:
                    arrays[k] = v
        splits[s] = arrays
    return save_bundle(tmp_path / "bad", splits, name="t")


@pytest.mark.parametrize("overrides,message", [
    ({"audio": None}, r"train\.npz: missing field 'audio'"),
    ({"audio": np.zeros((3, 3), np.float32)}, r"field 'audio' must have shape \(N=4"),
    ({"audio": np.zeros((4, 3), np.int32)}, r"field 'audio' must be floating point"),
    ({"text": np.array([[0, 1], [0, np.nan], [0, 0], [1, 1]], np.float32)}, r"field 'text' row 1 .*NaN or inf"),
    ({"text": np.array([[0, 1], [0, 1], [0, np.inf], [1, 1]], np.float32)}, r"field 'text' row 2"),
    ({"ids": np.array(["a", "b", "a", "c"])}, r"field 'ids' row 0: duplicate id 'a'"),
    ({"ids": np.array(["a", "b", "c", "x10"])}, r"id 'x10' also in split 'train'"),
    ({"ids": np.array([], dtype=str), "audio": np.zeros((0, 3), np.float32), "text": np.zeros((0, 2), np.float32)},
     r"split 'train' is empty"),
    ({"audio_ids": np.array(["x0", "x1", "x3", "x2"])}, r"field 'audio_ids' row 2 does not match"),
    ({"text": np.zeros((4, 5), np.float32)}, r"different feature shapes across splits"),
    ({"ids": np.array([1, 2, 3, 4])}, r"'ids' must be a 1-D unicode array"),
    ({"media_audio": np.array(["ok.wav", "../../etc/passwd", "", "a.wav"])}, r"row 1: path .* escapes the bundle"),
    ({"audio_present": np.zeros(4, np.int8)}, r"'audio_present' must be a bool array"),
])
def test_validation_errors_name_file_field_and_row(tmp_path, overrides, message):
    root = _write(tmp_path, **overrides)
    with pytest.raises(BundleError, match=message):
        load_bundle(root)


def test_nan_in_missing_row_is_allowed(tmp_path):
    text = np.ones((4, 2), np.float32)
    text[1] = np.nan
    root = _write(tmp_path, text=text, text_present=np.array([True, False, True, True]))
    assert not load_bundle(root)["train"].present["text"][1]


def test_manifest_and_file_errors(tmp_path):
    root = _write(tmp_path)
    (root / "manifest.json").write_text(json.dumps({"format": "mmkit-bundle", "version": 1, "modalities": ["video"]}))
    with pytest.raises(BundleError, match="'modalities' must be"):
        load_bundle(root)
    root = _write(tmp_path)
    (root / "val.npz").write_bytes((root / "val.npz").read_bytes()[:50])
    with pytest.raises(BundleError, match=r"val\.npz: not a readable \.npz"):
        load_bundle(root)
    (root / "val.npz").unlink()
    with pytest.raises(BundleError, match="missing split file"):
        load_bundle(root)
    with pytest.raises(BundleError, match="not a bundle directory"):
        load_bundle(tmp_path / "nowhere")


def test_pickled_objects_are_refused(tmp_path):
    root = _write(tmp_path, captions=np.array([{"a": 1}] * 4, dtype=object))
    with pytest.raises(BundleError, match="without pickle"):
        load_bundle(root)


def test_media_path_resolution(tmp_path):
    root = _write(tmp_path, media_audio=np.array(["a/1.wav", "", "b.wav", "c.wav"]))
    split = load_bundle(root)["train"]
    assert split.media_path("audio", 0) == (root / "a/1.wav").resolve()
    assert split.media_path("audio", 1) is None
