"""Drag-and-Drop-style generator: a batch of a task's prompts -> a LoRA, no description needed.

Input: P example prompts of the task, each read by the frozen sentence encoder into token
states, padded/cut to T tokens: a tensor [P, T, 384]. A cascade of hyper-convolution blocks
reshapes it; each block mixes
    prompts   (a conv whose channels are the prompts, sliding over the token x feature plane),
    tokens    (a conv whose channels are the token positions, sliding over prompt x feature),
    features  (a linear map of the feature dimension),
until the grid is [2 * modules, layers, latent]: one latent vector per (module, A|B, layer).
Per (module, A|B) a linear head turns its latent vectors into that LoRA factor for every layer,
so together the outputs are the flattened LoRA weights of all targeted layers. The heads start
at a standard LoRA init (B = 0, A kaiming values from the bias). Trained with MSE against
checkpoints of library LoRAs (several per task); the loop is studio.hyper.training.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from studio.errors import UserError
from studio.hyper.saved import load_weights, read_hyper_config, save_network
from studio.hyper.targets import Lora, LoraSpec


@dataclass
class DnDConfig:
    spec: dict
    n_prompts: int = 8
    max_tokens: int = 32
    embed_dim: int = 384
    stages: list = field(default_factory=lambda: [[16, 16, 128]])   # (prompts, tokens, features)
    latent: int = 64
    kind: str = "dnd"
    notes: dict = field(default_factory=dict)


class HyperConvBlock(nn.Module):
    def __init__(self, p_in, p_out, t_in, t_out, c_in, c_out):
        super().__init__()
        self.prompt_conv = nn.Conv2d(p_in, p_out, 3, padding=1)
        self.token_conv = nn.Conv2d(t_in, t_out, 3, padding=1)
        self.feature = nn.Linear(c_in, c_out)
        self.norm = nn.LayerNorm(c_out)
        self.act = nn.SiLU()

    def forward(self, x):                                 # [B, P, T, C]
        x = self.act(self.prompt_conv(x))                 # prompts mix  -> [B, P', T, C]
        x = self.act(self.token_conv(x.transpose(1, 2)))  # tokens mix   -> [B, T', P', C]
        x = self.feature(x.transpose(1, 2))               # features     -> [B, P', T', C']
        return self.act(self.norm(x))


class DnDGenerator(nn.Module):
    def __init__(self, config: DnDConfig):
        super().__init__()
        self.config = config
        self.spec = spec = LoraSpec.from_dict(config.spec)
        if config.n_prompts < 1 or config.max_tokens < 1:
            raise UserError("n_prompts and max_tokens must be positive.", field="n_prompts",
                            fix="Use e.g. 8 prompts of 32 tokens.")
        dims = [(config.n_prompts, config.max_tokens, config.embed_dim)]
        dims += [tuple(int(v) for v in s) for s in config.stages]
        dims.append((2 * len(spec.modules), spec.num_layers, config.latent))
        self.blocks = nn.ModuleList(HyperConvBlock(p0, p1, t0, t1, c0, c1)
                                    for (p0, t0, c0), (p1, t1, c1) in zip(dims, dims[1:]))
        self.heads = nn.ModuleList()
        r = spec.r
        for m in spec.modules:
            self.heads.append(nn.Linear(config.latent, r * spec.in_features[m]))   # A
            self.heads.append(nn.Linear(config.latent, spec.out_features[m] * r))  # B
        self._init_heads()

    @torch.no_grad()
    def _init_heads(self):
        for i, m in enumerate(self.spec.modules):
            head_a, head_b = self.heads[2 * i], self.heads[2 * i + 1]
            bound = 1.0 / math.sqrt(self.spec.in_features[m])
            head_a.bias.uniform_(-bound, bound)
            small = 0.1 * bound / math.sqrt(self.config.latent)
            head_a.weight.uniform_(-small, small)
            head_b.weight.zero_()
            head_b.bias.zero_()

    def forward(self, states: torch.Tensor) -> list[Lora]:
        """states [B, P, T, 384] -> one LoRA per batch item."""
        x = states
        for block in self.blocks:
            x = block(x)                                  # ends as [B, 2M, layers, latent]
        spec, r = self.spec, self.spec.r
        out: list[Lora] = [{} for _ in range(x.shape[0])]
        for i, m in enumerate(spec.modules):
            n_b, n_l = x.shape[0], spec.num_layers
            a_all = self.heads[2 * i](x[:, 2 * i]).view(n_b, n_l, r, spec.in_features[m])
            b_all = self.heads[2 * i + 1](x[:, 2 * i + 1]).view(n_b, n_l, spec.out_features[m], r)
            for bi, (a_b, b_b) in enumerate(zip(a_all.unbind(0), b_all.unbind(0))):
                for layer, (a, b) in enumerate(zip(a_b.unbind(0), b_b.unbind(0))):
                    out[bi][(layer, m)] = (a, b)
        return out

    def prompt_states(self, prompts: list[str], encoder=None) -> torch.Tensor:
        """[P, T, 384] for exactly n_prompts prompts (repeated cyclically when fewer)."""
        from studio.hyper.encoder import default_encoder

        prompts = [p for p in prompts if p and p.strip()]
        if not prompts:
            raise UserError("no example prompts given.", field="prompts",
                            fix="Give a few example inputs of the task.")
        chosen = [prompts[i % len(prompts)] for i in range(self.config.n_prompts)]
        states, _ = (encoder or default_encoder()).token_states(chosen, self.config.max_tokens)
        return states

    def save(self, out_dir: str | Path) -> Path:
        return save_network(self, out_dir)

    @classmethod
    def load(cls, folder: str | Path) -> "DnDGenerator":
        folder = Path(folder)
        model = cls(DnDConfig(**read_hyper_config(folder, "dnd")))
        load_weights(model, folder)
        model.eval()
        return model


def _flat(spec: LoraSpec, lora: Lora) -> torch.Tensor:
    return torch.cat([torch.cat([lora[k][0].reshape(-1), lora[k][1].reshape(-1)]) for k in spec.keys])


class DnDData:
    """Encoded prompt pools and flattened checkpoint targets of the tasks, for DnD's MSE loss.

    Each task's prompts are split: most feed training batches, the last quarter (at least one
    batch worth) is kept for the held-out loss, so evaluation sees prompt sets never trained on."""

    def __init__(self, generator: "DnDGenerator", tasks, encoder=None, rng=None,
                 prompt_pool: int = 48):
        from studio.hyper.encoder import default_encoder

        rng = rng or random.Random(0)
        encoder = encoder or default_encoder()
        self.generator, cfg, spec = generator, generator.config, generator.spec
        self.train_pools, self.eval_pools, self.targets = [], [], []
        for t in tasks:
            prompts = rng.sample(t.prompts, min(prompt_pool, len(t.prompts)))
            if len(prompts) < 2:
                raise UserError(f"task '{t.name}' has fewer than 2 example prompts.",
                                field="examples", fix="Add examples.jsonl with a few examples.")
            states = encoder.token_states(prompts, cfg.max_tokens)[0]
            n_eval = max(1, min(len(prompts) // 4, cfg.n_prompts))
            self.train_pools.append(states[:-n_eval])
            self.eval_pools.append(states[-n_eval:])
            self.targets.append([_flat(spec, c) for c in (t.checkpoints or [t.target])])

    def to(self, device) -> "DnDData":
        self.train_pools = [p.to(device) for p in self.train_pools]
        self.eval_pools = [p.to(device) for p in self.eval_pools]
        self.targets = [[t.to(device) for t in ts] for ts in self.targets]
        return self

    def loss(self, rng: random.Random, batch_tasks: int = 4, held_out: bool = False):
        """Mean squared error of generated vs checkpoint LoRAs for a batch of tasks (held_out:
        every task, held-apart prompts, final LoRA as target)."""
        pools = self.eval_pools if held_out else self.train_pools
        n = len(pools)
        idx = list(range(n)) if held_out else rng.sample(range(n), min(batch_tasks, n))
        states, tgt = [], []
        for i in idx:
            rows = [rng.randrange(pools[i].shape[0]) for _ in range(self.generator.config.n_prompts)]
            states.append(pools[i][rows])
            tgt.append(self.targets[i][-1] if held_out else rng.choice(self.targets[i]))
        out = self.generator(torch.stack(states))
        spec = self.generator.spec
        return torch.stack([((_flat(spec, lo) - t) ** 2).mean() for lo, t in zip(out, tgt)]).mean()
