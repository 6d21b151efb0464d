"""An exponential moving average of a network's weights during training (`TrainConfig.weight_ema`).

The paper does not say whether DPBridge keeps one; many diffusion fine-tunings do, Marigold's recipe does not.
The average is what gets exported when it is on; the raw weights keep training. It is registered with accelerate
so a checkpoint holds it and a resumed run continues it exactly.
"""
from __future__ import annotations

import torch


class WeightEMA:
    """avg <- decay x avg + (1 - decay) x weights, after every optimiser step; float32 copies of every parameter."""

    def __init__(self, module: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"weight_ema must lie in (0, 1) (0 turns it off), got {decay}")
        self.decay = decay
        self.average = {name: p.detach().float().clone() for name, p in module.named_parameters()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for name, p in module.named_parameters():
            self.average[name].lerp_(p.detach().float(), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module) -> None:
        """Write the average into ``module``'s parameters (in their own dtype)."""
        for name, p in module.named_parameters():
            p.copy_(self.average[name].to(p.dtype))

    def state_dict(self) -> dict:
        return {"decay": self.decay, "average": self.average}

    def load_state_dict(self, state: dict) -> None:
        if state["decay"] != self.decay or state["average"].keys() != self.average.keys():
            raise ValueError(f"the checkpoint's weight average (decay {state['decay']}) is not this run's "
                             f"(decay {self.decay}); resume with the same settings or choose another --set output=DIR")
        self.average = {k: v.float() for k, v in state["average"].items()}
