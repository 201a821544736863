"""The retrieval widget shows a caption's true matches (many-to-many truth) beside the exact match."""
import dataclasses

import torch

from mmkit.app.widgets import RetrievalApp, RetrievalSession, caption_truth_rows
from mmkit.data import load_bundle, make_synthetic_bundle


def test_caption_truth_rows_and_their_marks(tmp_path):
    split = load_bundle(make_synthetic_bundle(tmp_path / "b", n_items=(20, 10, 30), dims={"audio": 6, "image": 6,
                                                                                          "text": 6}, seed=4,
                                              truth=True))["test"]
    truth = split.text_relevance()
    generic = int(truth.sum(1).argmax())  # a caption true of several items
    described = {int(j) for j in truth[generic].nonzero()[0]}
    assert len(described) > 1 and generic in described
    assert caption_truth_rows(split, {"audio": generic, "text": generic}, "image") == described
    # text as the target: the captions that describe the query's item
    assert caption_truth_rows(split, {"image": 3}, "text") == {int(i) for i in truth[:, 3].nonzero()[0]}
    assert caption_truth_rows(split, {"audio": 3}, "image") is None
    plain = dataclasses.replace(split, relevant=None)
    assert caption_truth_rows(plain, {"text": generic}, "image") is None

    g = torch.Generator().manual_seed(0)
    enc = {m: (torch.nn.functional.normalize(torch.randn(30, 4, generator=g), dim=-1), torch.full((30,), 5.0))
           for m in ("audio", "image", "text")}
    for part, marks in ((split, len(described) - 1), (plain, 0)):
        app = RetrievalApp(RetrievalSession(part, {"run": enc}), target="image", distance="cosine", k=30)
        app.pickers["text"].pick.value = str(split.ids[generic])  # linked: the audio picker follows
        shown = app.results["run"].value
        assert shown.count("<td>✔</td>") == 1 and shown.count("<td>≈</td>") == marks  # the whole gallery is listed
        assert (f"{len(described)} of {len(described)} true by caption" in shown) == (part is split)
