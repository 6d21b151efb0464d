"""The ablation grid of Table 3 as overlays on one DPBridge recipe (never copies of the method).

``ABLATION_BASE`` is the tiny recipe the grid was trained with (the SD methods' base is the paper's defaults):
v-parameterisation, image consistency on latents at every t (README explains why). The shipped default
checkpoints add ``ic_subbatch = 0`` and ``top_t_fraction = 0.5``, found later; the grid keeps the base its rows
were trained with. Each variant changes only the settings it names. The ``full`` variant is the
base itself, retrained at the ablation budget so every row of the grid had the same training.
"""
from __future__ import annotations

# settings every variant starts from (DPBridgeConfig fields)
ABLATION_BASE = {"parameterization": "v", "image_consistency": "latent", "ic_max_k": 998}

# variant -> (overlay on ABLATION_BASE, what it tests). Table 3's rows: scratch (row 1), ft (2), ft_ic (3),
# ft_dan (4), full (5); dan_b and ic_pixel / ic_latent are math.md's open choices.
ABLATION_VARIANTS: dict[str, tuple[dict, str]] = {
    "full": ({}, "fine-tuned + DAN-A + image consistency (the method)"),
    "scratch": ({"finetune": False}, "Table 3 row 1: trained from scratch (random UNet), DAN + IC"),
    "ft": ({"dan": "off", "image_consistency": "off"}, "Table 3 row 2: fine-tuning only"),
    "ft_ic": ({"dan": "off"}, "Table 3 row 3: fine-tuning + image consistency, no DAN"),
    "ft_dan": ({"image_consistency": "off"}, "Table 3 row 4: fine-tuning + DAN, no image consistency"),
    "dan_b": ({"dan": "B"}, "open choice: DAN-B instead of DAN-A (nearly a no-op on the SD schedule, math.md)"),
    "ic_pixel": ({"image_consistency": "pixel"}, "open choice: image consistency in pixels (decoder) not latents"),
    "ic_latent": ({"image_consistency": "latent"}, "open choice: image consistency on latents, not through the decoder"),
}


def variant_settings(variant: str, base: dict = ABLATION_BASE) -> dict:
    """The DPBridgeConfig settings of one variant: ``base`` (the method's recipe: ABLATION_BASE for the tiny
    checkpoints, {} = the paper's defaults for the Stable Diffusion methods) + the variant's overlay."""
    if variant not in ABLATION_VARIANTS:
        raise KeyError(f"unknown ablation variant {variant!r}; known: {', '.join(ABLATION_VARIANTS)}")
    return {**base, **ABLATION_VARIANTS[variant][0]}


def distinct_variants(base: dict, defaults: dict) -> tuple[str, ...]:
    """The variants whose resolved config (``defaults``, the config class' defaults, + base + overlay) differs from
    ``full``'s (on the tiny recipe ``ic_latent`` is ``full`` itself, on the paper's defaults ``ic_pixel`` is): each
    method offers only these."""
    def resolved(variant: str) -> dict:
        return {**defaults, **variant_settings(variant, base)}

    return tuple(v for v in ABLATION_VARIANTS if v == "full" or resolved(v) != resolved("full"))
