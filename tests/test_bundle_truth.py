"""Many-to-many truth and views in the bundle: a synthetic bundle with a known answer, CSR validation,
and the row operations (subset, caption swap) that must carry truth and views along."""
import json
import re

import numpy as np
import pytest

from mmkit.data import BundleError, load_bundle, make_synthetic_bundle, save_bundle
from mmkit.data.bundle import truth_to_csr
from mmkit.data.perturb import select_rows, swap_captions


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = make_synthetic_bundle(tmp_path_factory.mktemp("b") / "syn", n_items=(80, 40, 40), truth=True, views=4, seed=3)
    return load_bundle(root)


def test_truth_matches_the_captions_rule(bundle):
    for split in bundle.values():
        groups = np.array([json.loads(a)["group"] for a in split.meta["attributes"]])
        for i, caption in enumerate(split.captions):
            m = re.fullmatch(r"an item of group (\d+)", str(caption))
            expected = groups == int(m.group(1)) if m else np.arange(len(split)) == i
            assert (split.text_relevance()[i] == expected).all(), caption
        assert (split.generality() == split.relevant.sum(1)).all() and split.generality().max() > 1


def test_views_shapes_severity_and_eval_view(bundle):
    v = bundle["train"].views
    assert set(v.features) == {"audio", "image", "text"} and v.eval_view == {"audio": 0, "image": 0, "text": 0}
    for m in v.features:
        assert v.features[m].shape[:2] == (80, 4) and v.severity[m].shape == (80, 4)
        assert (v.severity[m][:, 0] == 0).all() and (v.severity[m] <= 1).all() and v.severity[m][:, 1:].std() > 0.1
        assert np.array_equal(v.features[m][:, 0], bundle["train"].features[m])
        assert json.loads(v.factors[m][5, 2])["noise"] == pytest.approx(float(v.severity[m][5, 2]), abs=1e-4)
    assert (v.text_truth[:, 2] == bundle["train"].relevant).all()


def test_csr_round_trip():
    rng = np.random.default_rng(0)
    dense = rng.random((7, 9)) < 0.3
    indptr, indices = truth_to_csr(dense)
    back = np.zeros_like(dense)
    for r in range(7):
        back[r, indices[indptr[r]:indptr[r + 1]]] = True
    assert (back == dense).all() and indptr[-1] == dense.sum()


def _bundle_with(tmp_path, **fields):
    arrays = {"ids": np.array(["a", "b", "c"]), "text": np.ones((3, 4), np.float32), **fields}
    root = save_bundle(tmp_path / "t", {s: dict(arrays, ids=np.char.add(arrays["ids"], s)) for s in ("train", "val", "test")},
                       name="t")
    return root


@pytest.mark.parametrize("indptr,indices,message", [
    ([0, 1, 2, 3], [0, 1, 5], r"item rows in \[0, 3\)"),
    ([0, 2, 3, 4], [0, 0, 1, 2], "same item twice"),
    ([0, 1, 2, 3], [1, 1, 2], "row 0 does not describe its own item"),
    ([0, 2, 1, 3], [0, 1, 2], "never decrease"),
    ([0, 1, 2], [0, 1], r"shapes \(4,\)"),
])
def test_bad_truth_is_refused(tmp_path, indptr, indices, message):
    root = _bundle_with(tmp_path, truth_indptr=np.array(indptr), truth_indices=np.array(indices))
    with pytest.raises(BundleError, match=message):
        load_bundle(root)


def test_bad_views_are_refused(tmp_path):
    views = {"views_text": np.ones((3, 2, 4), np.float32), "views_text_severity": np.full((3, 2), 1.5, np.float32),
             "views_text_factors": np.full((3, 2), "{}"), "views_text_captions": np.full((3, 2), "x")}
    with pytest.raises(BundleError, match=r"views_text_severity' must be floats in \[0, 1\]"):
        load_bundle(_bundle_with(tmp_path, **views))


def test_select_rows_and_swap_carry_truth_and_views(bundle):
    train = bundle["train"]
    rows = np.array([7, 3, 50, 12, 33])
    sub = select_rows(train, rows)
    assert (sub.relevant == train.relevant[np.ix_(rows, rows)]).all()
    assert np.array_equal(sub.views.features["image"], train.views.features["image"][rows])
    assert (sub.views.text_truth == train.views.text_truth[rows][:, :, rows]).all()
    swapped, record = swap_captions(train, 0.5, seed=0)
    index = {i: r for r, i in enumerate(train.ids)}
    for item, source in zip(record["items"], record["caption_from"]):
        r, s = index[item], index[source]
        assert (swapped.relevant[r] == train.relevant[s]).all()
        assert np.array_equal(swapped.views.features["text"][r], train.views.features["text"][s])
        assert swapped.meta["caption_attributes"][r] == train.meta["caption_attributes"][s]
        assert np.array_equal(swapped.views.features["audio"][r], train.views.features["audio"][r])
