"""Inference options that change how a method's networks run, not what they compute: channels-last memory
format, torch.compile and the UNet's attention as batched matrix products (methods.attention; autocast is ``RunOptions.dtype``, applied in each method's ``predict``).

Applied to a method's ``model`` after it is built (harness.registry.build_method), so every method with a torch
model gets them without code of its own: the UNet and the VAE encoder and decoder of a latent model (their
``forward`` is what inference calls), else the whole model.
"""
from __future__ import annotations

import torch

from methods.attention import BmmAttnProcessor


def inference_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules whose forward inference calls: unet, vae.encoder, vae.decoder where present, else the model."""
    found = []
    unet, vae = getattr(model, "unet", None), getattr(model, "vae", None)
    if isinstance(unet, torch.nn.Module):
        found.append(unet)
    for part in ("encoder", "decoder"):
        module = getattr(vae, part, None)
        if isinstance(module, torch.nn.Module):
            found.append(module)
    return found or [model]


def apply_inference_options(method, options) -> list[str]:
    """Apply ``options.channels_last``, ``options.bmm_attention`` and ``options.compile`` to ``method.model``;
    returns what was applied (nothing for a method without a torch model: the options do not concern it)."""
    model = getattr(method, "model", None)
    wanted = options.channels_last or options.compile or options.bmm_attention
    if not wanted or not isinstance(model, torch.nn.Module):  # no network (e.g. the trivial references)
        return []
    applied = []
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
        applied.append("channels_last")
    if options.bmm_attention:
        with_processors = [m for m in inference_modules(model) if hasattr(m, "set_attn_processor")]
        for module in with_processors:  # the UNet (the VAE's attention has a group norm and residual: unchanged)
            module.set_attn_processor(BmmAttnProcessor())
        if with_processors:
            applied.append("bmm_attention")
    if options.compile:
        for module in inference_modules(model):
            # In place: forward goes through torch.compile, compiled on first call. Static shapes: each batch size
            # compiles once (a ragged last batch adds one). Measured on the 2-core CPU: with automatic dynamic
            # shapes the UNet's recompile for batch 1 after batch 8 had not finished after 5 minutes on an idle
            # machine; with static shapes UNet + VAE compile in about 90 s per batch size (README).
            module.compile(dynamic=False)
        applied.append("compile")
    return applied
