"""Run the frozen base model with a *generated* LoRA inside the autograd graph.

The base model is wrapped once by peft with the spec's LoraConfig; each forward swaps peft's
lora_A / lora_B parameters for the hypernetwork's output tensors with
torch.func.functional_call, so the loss back-propagates into the hypernetwork while the scaling,
dropout and forward maths stay peft's own (the same ones a saved adapter gets at inference).
"""

from __future__ import annotations

import torch

from studio.hyper.targets import Lora, LoraSpec


class GeneratedLoraModel:
    """A frozen base model that takes LoRA weights as forward-time inputs."""

    def __init__(self, base_model, spec: LoraSpec, adapter: str = "default"):
        from peft import get_peft_model

        for p in base_model.parameters():
            p.requires_grad_(False)
        self.spec = spec
        self.adapter = adapter
        self.model = get_peft_model(base_model, spec.lora_config(), adapter_name=adapter)
        self.model.eval()          # no dropout anywhere; gradients still flow
        for p in self.model.parameters():
            p.requires_grad_(False)
        names = dict(self.model.named_parameters())
        missing = [k for k in self._keys() if k not in names]
        if missing:
            raise RuntimeError(f"peft parameter names differ from the spec: {missing[:2]}")

    def _keys(self):
        for layer, m in self.spec.keys:
            yield self.spec.live_key(layer, m, "A", self.adapter)
            yield self.spec.live_key(layer, m, "B", self.adapter)

    def params(self, lora: Lora) -> dict[str, torch.Tensor]:
        out = {}
        for layer, m in self.spec.keys:
            a, b = lora[(layer, m)]
            out[self.spec.live_key(layer, m, "A", self.adapter)] = a
            out[self.spec.live_key(layer, m, "B", self.adapter)] = b
        return out

    def forward(self, lora: Lora, **batch):
        return torch.func.functional_call(self.model, self.params(lora), args=(), kwargs=batch,
                                          strict=False)

    def loss(self, lora: Lora, batch: dict) -> torch.Tensor:
        return self.forward(lora, input_ids=batch["input_ids"],
                            attention_mask=batch["attention_mask"], labels=batch["labels"]).loss

    def unwrap(self):
        """Remove the LoRA layers again and return the plain base model."""
        return self.model.unload()
