"""Trainable low-rank adapters for frozen torch Linear layers (ComfyUI's ops included), through forward
hooks: the wrapped modules are never replaced or modified, so the same model can serve the frozen teacher
(adapters off), the LoRA teacher (its adapters on) and a LoRA student (the student's adapters on)."""
from __future__ import annotations

import contextlib
import math
import re
from typing import Dict, Iterable, List, Sequence

import torch
from torch import nn


def target_linears(model: nn.Module, patterns: Sequence[str]) -> List[str]:
    """Names of the Linear layers whose qualified name matches any of ``patterns`` (regular expressions)."""
    regexes = [re.compile(p) for p in patterns]
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and any(r.search(name) for r in regexes)]


class LoRASet(nn.Module):
    """One set of adapters: for each target Linear y = W x + b, adds scale * B(A(x)) while enabled,
    with scale = scaling / rank (peft's lora_alpha / r). B starts at zero: an enabled fresh set changes nothing."""

    def __init__(self, model: nn.Module, names: Iterable[str], rank: int, scaling: float, seed: int = 0):
        super().__init__()
        names = list(names)
        if not names:
            raise ValueError("LoRA: no Linear layer matched the target patterns")
        self.rank, self.scale = rank, scaling / rank
        self.enabled = False
        self.names = names
        self.down = nn.ParameterDict()
        self.up = nn.ParameterDict()
        g = torch.Generator().manual_seed(seed)
        modules = dict(model.named_modules())
        self._hooks = []
        for name in names:
            linear = modules[name]
            key = name.replace(".", "__")
            down = torch.randn(rank, linear.in_features, generator=g) / math.sqrt(linear.in_features)
            self.down[key] = nn.Parameter(down.to(linear.weight.device))
            self.up[key] = nn.Parameter(torch.zeros(linear.out_features, rank, device=linear.weight.device))
            self._hooks.append(linear.register_forward_hook(self._hook(key)))

    def _hook(self, key: str):
        def add_low_rank(module, inputs, output):
            if not self.enabled:
                return None
            x = inputs[0]
            delta = torch.nn.functional.linear(torch.nn.functional.linear(x.to(self.down[key].dtype), self.down[key]),
                                               self.up[key])
            return output + (self.scale * delta).to(output.dtype)
        return add_low_rank

    @contextlib.contextmanager
    def active(self):
        previous, self.enabled = self.enabled, True
        try:
            yield self
        finally:
            self.enabled = previous

    def merged_state(self, model: nn.Module) -> Dict[str, torch.Tensor]:
        """The model's state dict with this set's adapters folded into the weights (for export)."""
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for name in self.names:
            key = name.replace(".", "__")
            w = state[name + ".weight"]
            state[name + ".weight"] = (w.float() + self.scale * self.up[key].detach().float()
                                       @ self.down[key].detach().float()).to(w.dtype)
        return state

    def remove(self):
        for h in self._hooks:
            h.remove()
        self._hooks = []
