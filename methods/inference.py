"""Inference options that change how a method's networks run, not what they compute: channels-last memory
format, torch.compile and, on the CPU, a batch split across threads (autocast is ``RunOptions.dtype``, applied in
each method's ``predict``). They change the float rounding of a prediction, not its meaning.

Applied to a method's ``model`` after it is built (harness.registry.build_method), so every method with a torch
model gets them without code of its own: the UNet and the VAE encoder and decoder of a latent model (their
``forward`` is what inference calls), else the whole model.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch


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


def predict_in_parts(predict, workers: int):
    """``predict(rgb [B,3,H,W], generators) -> [B,C,H,W]`` run as up to ``workers`` contiguous parts of the batch
    at once, each in its own thread with an equal share of the torch (intra-op) threads, results concatenated.

    Why: on a few CPU cores a small network's kernels parallelise badly inside one call (the 2-core CPU gives
    batch 1 only 1.3x from its second thread), while independent parts of a batch keep every core busy. Each image
    keeps its own generator, so its noise does not depend on the split; only float rounding does (other kernels).
    Only for a ``predict`` that keeps no state between calls (``Method.thread_safe_predict``)."""

    def split(rgb: torch.Tensor, generators: list) -> torch.Tensor:
        parts = min(workers, rgb.shape[0])
        if parts <= 1:
            return predict(rgb, generators)
        total = torch.get_num_threads()
        bounds = [round(i * rgb.shape[0] / parts) for i in range(parts + 1)]
        inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

        def part(i: int) -> torch.Tensor:
            torch.set_num_threads(max(1, total // parts))  # this thread's intra-op threads
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):  # both are per thread
                return predict(rgb[bounds[i]:bounds[i + 1]], generators[bounds[i]:bounds[i + 1]])

        try:
            with ThreadPoolExecutor(parts, thread_name_prefix="predict-part") as pool:
                outs = list(pool.map(part, range(parts)))  # re-raises the first part's error (e.g. out of memory)
        finally:
            torch.set_num_threads(total)  # a worker's setting can reach a caller that had not used threads yet
        return torch.cat(outs)

    return split


def apply_inference_options(method, options) -> list[str]:
    """Apply ``options.channels_last`` and ``options.compile`` to ``method.model`` and ``options.cpu_workers`` to
    its ``predict``; returns what was applied (nothing for a method without a torch model: the options do not
    concern it)."""
    applied = apply_cpu_workers(method, options)
    model = getattr(method, "model", None)
    wanted = options.channels_last or options.compile
    if not wanted or not isinstance(model, torch.nn.Module):  # no network (e.g. the trivial references)
        return applied
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
        applied.append("channels_last")
    if options.compile:
        for module in inference_modules(model):
            # In place: forward goes through torch.compile, compiled on first call. Static shapes: each batch size
            # compiles once (a ragged last batch adds one). Measured on the 2-core CPU: with automatic dynamic
            # shapes the UNet's recompile for batch 1 after batch 8 had not finished after 5 minutes on an idle
            # machine; with static shapes UNet + VAE compile in about 90 s per batch size (README).
            module.compile(dynamic=False)
        applied.append("compile")
    return applied


def apply_cpu_workers(method, options) -> list[str]:
    """Route ``method.predict`` through :func:`predict_in_parts` when ``options.cpu_workers > 1`` and the method
    allows it; the trivial references and methods with state in ``predict`` (a diffusers pipeline's scheduler)
    keep one call per batch."""
    workers = getattr(options, "cpu_workers", 1)
    if workers < 1:
        raise ValueError(f"cpu_workers must be >= 1, got {workers}")
    if workers == 1 or not method.thread_safe_predict:
        return []
    if torch.device(options.device).type != "cpu":
        raise ValueError(f"cpu_workers={workers} splits batches across CPU threads; on {options.device} leave it at 1 "
                         f"and raise the batch size instead")
    if options.compile:
        raise ValueError(f"cpu_workers={workers} with compile: compiled networks are not called from several threads "
                         f"here; choose one of the two")
    method.predict = predict_in_parts(method.predict, workers)
    return [f"cpu_workers={workers}"]
