"""Attention as two batched matrix products around a softmax, for the tiny heads of the tiny UNet.

PyTorch's fused CPU attention (``scaled_dot_product_attention``) runs the 16x16-latent self-attention of the tiny
backbone (256 tokens, 8 heads of dimension 4) at about 0.5 ms per image on a 2-core AMD EPYC; the same math as
``bmm(q, k^T) -> softmax -> bmm`` takes about 0.28 ms there (``benchmarks/test_inference.py``), at batch 1 and 8
alike, because:

- the value product is computed transposed, ``out^T = v^T p^T`` (``[D,S] x [S,L]``): a matrix product whose
  output has only D = 4 columns is several times slower in the CPU BLAS than the same product with D rows;
- the scores live in scratch buffers that are reused from call to call: a fresh multi-megabyte tensor per call
  costs more in page faults than the softmax itself;
- heads are processed in chunks of about ``CHUNK_BYTES`` of scores, so they stay in a core's cache between the
  three steps. On a 2-core Xeon with 2 MB of L2 per core, the 256-token self-attention took 2.06-2.25 ms for
  8 images and 0.27-0.31 for one with 1 MB chunks, against 2.80-2.92 and 0.38 with 4 MB (the benchmark, two
  alternating runs); 0.5 MB was as fast as 1 MB and 0.25 MB slower again. Any chunk gives bit-identical results;
- against a short context (cross-attention, ``SHORT_SOURCE``) the scores are computed transposed, so the softmax
  avoids PyTorch's scalar path for a short last dimension;
- the q, k, v projections are computed transposed, ``W x^T`` (``[H*D,C] x [C,T]``), which lays them out head-major,
  [B*H,D,T], as a free view, and the output projection reads out^T through a transposed view: no tensor is copied
  to split or merge the heads (at batch 8 those copies cost about 1.1 ms per image, 2% of a prediction).

The result equals the fused kernel's to float rounding (about 1e-6), not bit for bit. Off by default
(``RunOptions.bmm_attention``, ``--bmm-attention``); recorded with each result when on.
"""
from __future__ import annotations

import torch

SCRATCH_BYTES = 4 * 2**20  # the most one head's scores may take; a larger head takes the fused kernel
CHUNK_BYTES = 2**20  # the scores of one chunk of heads (at least one head), split across the threads
# Below this many source tokens (the cross-attention's 8-token text context), the scores are laid out [S,L] and the
# softmax runs over dimension 1: PyTorch's CPU softmax over a last dimension shorter than its vector width falls
# to a scalar loop, about 20x slower than the same softmax over an outer dimension (0.15 against 0.009 ms for
# [8,256,8]); from 32 tokens up the last-dimension kernel is as fast or faster.
SHORT_SOURCE = 32


def bmm_attention(q: torch.Tensor, k_t: torch.Tensor, v_t: torch.Tensor, scratch: dict) -> torch.Tensor:
    """Softmax attention. q [N,L,D] (N = batch x heads), k_t and v_t [N,D,S] -> out^T [N,D,L].

    ``scratch`` maps (chunk, L, S, dtype, device) to two reusable [chunk,L,S] buffers (scores, probabilities).
    """
    n, length, dim = q.shape
    source = k_t.shape[-1]
    chunk = max(1, min(n, CHUNK_BYTES // (length * source * q.element_size())))
    key = (chunk, length, source, q.dtype, q.device)
    if key not in scratch:
        scratch[key] = tuple(torch.empty(chunk, length, source, dtype=q.dtype, device=q.device) for _ in range(2))
    scores, probs = scratch[key]
    q = q * dim ** -0.5
    out_t = torch.empty(n, dim, length, dtype=q.dtype, device=q.device)
    by_source = source < SHORT_SOURCE
    if by_source:  # scores kept as [S,L] so the softmax runs over the outer dimension
        scores, probs = (x.view(chunk, source, length) for x in (scores, probs))
    for start in range(0, n, chunk):
        part = slice(start, min(n, start + chunk))
        m = part.stop - start
        if by_source:
            torch.bmm(k_t[part].transpose(1, 2), q[part].transpose(1, 2), out=scores[:m])  # [m,S,L]
            torch._softmax(scores[:m], 1, False, out=probs[:m])
            torch.bmm(v_t[part], probs[:m], out=out_t[part])  # [m,D,S] x [m,S,L]
        else:
            torch.bmm(q[part], k_t[part], out=scores[:m])  # [m,L,S]
            torch._softmax(scores[:m], -1, False, out=probs[:m])
            torch.bmm(v_t[part], probs[:m].transpose(1, 2), out=out_t[part])  # [m,D,S] x [m,S,L]
    return out_t


def fits_scratch(length: int, source: int, dtype: torch.dtype) -> bool:
    return length * source * dtype.itemsize <= SCRATCH_BYTES


def heads_projection(linear: torch.nn.Linear, x: torch.Tensor, heads: int) -> torch.Tensor:
    """``linear(x)`` split into heads and transposed: x [B,T,C] -> [B*H,D,T], computed as ``W x^T (+ b)``."""
    batch, tokens, _ = x.shape
    weight = linear.weight.expand(batch, *linear.weight.shape)  # [B,H*D,C], a view
    if linear.bias is None:
        out = torch.bmm(weight, x.transpose(1, 2))
    else:
        out = torch.baddbmm(linear.bias.view(1, -1, 1), weight, x.transpose(1, 2))
    return out.view(batch * heads, -1, tokens)


def merged_heads_projection(linear: torch.nn.Linear, out_t: torch.Tensor, batch: int) -> torch.Tensor:
    """``linear`` applied to the heads merged back: out^T [B*H,D,L] -> [B,L,O], reading out^T transposed."""
    heads_dim, length = out_t.shape[0] // batch * out_t.shape[1], out_t.shape[2]
    tokens = out_t.view(batch, heads_dim, length).transpose(1, 2)  # [B,L,H*D], a view
    weight_t = linear.weight.t().expand(batch, heads_dim, linear.weight.shape[0])  # [B,H*D,O], a view
    if linear.bias is None:
        return torch.bmm(tokens, weight_t)
    return torch.baddbmm(linear.bias.view(1, 1, -1), tokens, weight_t)


class BmmAttnProcessor:
    """A diffusers attention processor: plain (self or cross) attention through ``bmm_attention``; anything else
    (masks, spatial or group norms, q/k norms, residual or rescaled outputs, projections other than plain
    ``nn.Linear``, 4-D inputs, heads too large for the scratch) goes to diffusers' own ``AttnProcessor2_0``
    unchanged."""

    def __init__(self):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.fallback = AttnProcessor2_0()
        self.scratch: dict = {}

    def plain(self, attn, hidden_states, context, attention_mask) -> bool:
        return (attention_mask is None and hidden_states.ndim == 3 and attn.spatial_norm is None
                and attn.group_norm is None and attn.norm_q is None and attn.norm_k is None
                and not attn.residual_connection and attn.rescale_output_factor == 1
                and (context is None or not attn.norm_cross)
                and all(type(m) is torch.nn.Linear for m in (attn.to_q, attn.to_k, attn.to_v, attn.to_out[0]))
                and fits_scratch(hidden_states.shape[1], (hidden_states if context is None else context).shape[1],
                                 hidden_states.dtype))

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        if not self.plain(attn, hidden_states, encoder_hidden_states, attention_mask):
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states  # [B,S,C']
        batch, heads = hidden_states.shape[0], attn.heads  # hidden_states [B,L,C]
        q_t, k_t, v_t = (heads_projection(linear, x, heads)  # [B*H,D,L], [B*H,D,S], [B*H,D,S]
                         for linear, x in ((attn.to_q, hidden_states), (attn.to_k, context), (attn.to_v, context)))
        out_t = bmm_attention(q_t.transpose(1, 2), k_t, v_t, self.scratch)  # [B*H,D,L]
        return attn.to_out[1](merged_heads_projection(attn.to_out[0], out_t, batch))  # [B,L,O]; then dropout
