"""Training-set perturbations of the study (docs/study.md §4): deterministic, nested across levels,
touching only what they say, on the chosen items only."""
import numpy as np
import pytest

from mmkit.data.bundle import FeatureSplit
from mmkit.data.perturb import (ambiguous_captions, chosen, derangement, drop_modality, generic_caption,
                                nested_subset, out_of_distribution, perturbation_order, select_rows, swap_captions)


def _split(n=50, seed=0, collections=("essenFolksong", "bach"), prefix="i"):
    rng = np.random.default_rng(seed)
    ids = np.array([f"{prefix}{k}" for k in range(n)])
    return FeatureSplit(ids=ids, features={"audio": rng.normal(size=(n, 4)).astype(np.float32),
                                           "image": rng.normal(size=(n, 3)).astype(np.float32),
                                           "text": rng.normal(size=(n, 5)).astype(np.float32)},
                        present={m: np.ones(n, dtype=bool) for m in ("audio", "image", "text")},
                        captions=np.array([f"caption {k}" for k in range(n)]),
                        meta={"collection": np.array([collections[k % len(collections)] for k in range(n)]),
                              "group": np.array([f"{prefix}g{k}" for k in range(n)])})


def test_order_is_seeded_and_levels_are_nested():
    a, b = perturbation_order(100, 3, 0), perturbation_order(100, 3, 0)
    assert np.array_equal(a, b) and not np.array_equal(a, perturbation_order(100, 3, 1))
    assert not np.array_equal(a, perturbation_order(100, 4, 0))
    assert set(chosen(a, 0.2)) <= set(chosen(a, 0.4)) and len(chosen(a, 0.4)) == 40
    with pytest.raises(ValueError, match="fraction"):
        chosen(a, 1.5)


def test_derangement_has_no_fixed_point_and_is_uniform_enough():
    rng = np.random.default_rng(1)
    draws = np.stack([derangement(4, rng) for _ in range(4000)])
    assert (draws != np.arange(4)).all()
    # 9 derangements of 4 items, each with probability 1/9: every one appears 444 +- 3 sd (~20)
    _, counts = np.unique(draws, axis=0, return_counts=True)
    assert len(counts) == 9 and (abs(counts - 4000 / 9) < 80).all()


def test_swap_captions_moves_text_among_the_chosen_items_only():
    split = _split()
    out, record = swap_captions(split, 0.4, seed=2)
    rows = chosen(perturbation_order(50, 3, 2), 0.4)
    assert record["items"] == split.ids[rows].tolist() and len(rows) == 20
    source = [int(np.flatnonzero(split.ids == s)[0]) for s in record["caption_from"]]
    assert sorted(source) == sorted(rows.tolist()) and all(s != r for s, r in zip(source, rows))
    assert np.array_equal(out.features["text"][rows], split.features["text"][source])
    assert np.array_equal(out.captions[rows], split.captions[source])
    untouched = np.setdiff1d(np.arange(50), rows)
    assert np.array_equal(out.features["text"][untouched], split.features["text"][untouched])
    assert np.array_equal(out.features["audio"], split.features["audio"])  # audio and image stay aligned
    again, _ = swap_captions(split, 0.4, seed=2)
    assert np.array_equal(again.features["text"], out.features["text"])
    assert np.array_equal(split.captions, _split().captions)  # the input is not modified


def test_ambiguous_captions_share_one_caption_per_collection():
    split = _split()
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return np.stack([np.full(5, len(t), dtype=np.float32) for t in texts])

    out, record = ambiguous_captions(split, 0.2, seed=0, embed=embed)
    rows = chosen(perturbation_order(50, 4, 0), 0.2)
    assert len(calls) == 1 and len(calls[0]) == len(set(calls[0])) <= 2  # each distinct caption embedded once
    for row in rows:
        name = {"essenFolksong": "the Essen folksong collection"}.get(split.meta["collection"][row])
        if name:
            assert out.captions[row] == generic_caption(name) == "A piece from the Essen folksong collection."
        assert np.array_equal(out.features["text"][row], np.full(5, len(out.captions[row]), dtype=np.float32))
    untouched = np.setdiff1d(np.arange(50), rows)
    assert np.array_equal(out.captions[untouched], split.captions[untouched])
    assert record["captions"] == out.captions[rows].tolist()


def test_drop_modality_drops_one_per_item_and_the_same_at_every_level():
    split = _split(n=90)
    low, rec_low = drop_modality(split, 0.3, seed=4)
    high, rec_high = drop_modality(split, 0.6, seed=4)
    assert len(rec_low["items"]) == 27 and len(rec_high["items"]) == 54
    assert dict(zip(rec_low["items"], rec_low["dropped"])).items() <= dict(zip(rec_high["items"], rec_high["dropped"])).items()
    for item, m in zip(rec_high["items"], rec_high["dropped"]):
        row = int(np.flatnonzero(split.ids == item)[0])
        assert not high.present[m][row] and not high.features[m][row].any()
        assert all(high.present[o][row] for o in ("audio", "image", "text") if o != m)
    assert sum((~high.present[m]).sum() for m in high.present) == 54
    assert set(rec_high["dropped"]) == {"audio", "image", "text"}


def test_nested_subsets():
    split = _split(n=60)
    small, rec = nested_subset(split, 10, seed=1)
    large, _ = nested_subset(split, 30, seed=1)
    assert len(small) == 10 and set(small.ids) <= set(large.ids) and rec["items"] == small.ids.tolist()
    assert set(nested_subset(split, 10, seed=2)[0].ids) != set(small.ids)
    with pytest.raises(ValueError, match="n_items"):
        nested_subset(split, 61, seed=1)


def test_out_of_distribution_separates_folk_from_art_music_without_group_leaks():
    data = {s: _split(n=40, seed=k, prefix=s[:2]) for k, s in enumerate(("train", "val", "test"))}
    data["val"].meta["group"][1] = "trg0"  # an art-music item of val shares a melody with a folk training item
    out, record = out_of_distribution(data)
    assert set(out["train"].meta["collection"]) == set(out["val"].meta["collection"]) == {"essenFolksong"}
    assert set(out["test"].meta["collection"]) == {"bach"} and set(out["test_id"].meta["collection"]) == {"essenFolksong"}
    assert not set(out["test"].meta["group"]) & set(out["train"].meta["group"])
    assert record["art_dropped_for_group_overlap"] == [data["val"].ids[1]]
    assert len(out["test"]) == 3 * 20 - 1 and len(out["train"]) == 20


def test_select_rows_slices_every_per_item_array():
    split = _split(n=8)
    sub = select_rows(split, [5, 1])
    assert sub.ids.tolist() == ["i5", "i1"] and sub.captions.tolist() == ["caption 5", "caption 1"]
    assert np.array_equal(sub.features["image"], split.features["image"][[5, 1]])
    assert sub.meta["group"].tolist() == ["ig5", "ig1"]
