import dataclasses

import pytest
import torch
import torch.nn.functional as F

import methods.attention as attention
from harness.latency import LatencyConfig, study_settings
from harness.registry import build_method
from harness.run import RunConfig, config_key
from methods.attention import BmmAttnProcessor, bmm_attention
from methods.base import RunOptions


def _qkv(batch, heads, length, source, dim):
    g = torch.Generator().manual_seed(length + source)
    return (torch.randn(batch, heads, n, dim, generator=g) for n in (length, source, source))


def _by_bmm(q, k, v, scratch):
    b, h, length, d = q.shape
    k_t, v_t = (x.reshape(b * h, -1, d).transpose(1, 2) for x in (k, v))
    out_t = bmm_attention(q.reshape(b * h, length, d), k_t, v_t, scratch)  # [B*H,D,L]
    return out_t.transpose(1, 2).reshape(b, h, length, d)


@pytest.mark.parametrize("shape", [(1, 8, 256, 256, 4), (3, 8, 64, 64, 8),  # self
                                   (2, 4, 64, 5, 8), (2, 8, 256, 8, 4), (1, 2, 16, 31, 4)])  # cross: short source
def test_bmm_attention_equals_the_fused_kernel(shape):
    q, k, v = _qkv(*shape)
    assert torch.allclose(_by_bmm(q, k, v, {}), F.scaled_dot_product_attention(q, k, v), atol=1e-5)


@pytest.mark.parametrize("source", [16, 40])  # scores laid out [S,L] (short source) and [L,S]
def test_heads_are_chunked_to_the_chunk_size_with_a_ragged_last_chunk(monkeypatch, source):
    assert (source < attention.SHORT_SOURCE) == (source == 16)
    q, k, v = _qkv(1, 5, 16, source, 4)
    monkeypatch.setattr(attention, "CHUNK_BYTES", 2 * 16 * source * 4)  # two heads per chunk: 2 + 2 + 1
    scratch = {}
    out = _by_bmm(q, k, v, scratch)
    assert [key[0] for key in scratch] == [2]
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5)
    assert torch.equal(_by_bmm(q, k, v, scratch), out)  # the reused buffers leave no trace


def test_a_head_larger_than_the_chunk_goes_alone_and_one_larger_than_the_scratch_goes_to_the_fused_kernel(
        monkeypatch):
    q, k, v = _qkv(1, 3, 16, 40, 4)
    one_head = 16 * 40 * 4  # bytes of one head's scores
    monkeypatch.setattr(attention, "CHUNK_BYTES", one_head // 2)
    scratch = {}
    assert torch.allclose(_by_bmm(q, k, v, scratch), F.scaled_dot_product_attention(q, k, v), atol=1e-5)
    assert [key[0] for key in scratch] == [1]
    assert attention.fits_scratch(16, 40, torch.float32)
    monkeypatch.setattr(attention, "SCRATCH_BYTES", one_head - 1)
    assert not attention.fits_scratch(16, 40, torch.float32)


def _predict(method) -> torch.Tensor:
    rgb = torch.linspace(-1, 1, 2 * 3 * 64 * 64).reshape(2, 3, 64, 64)
    with torch.inference_mode():
        return method.predict(rgb, [torch.Generator().manual_seed(i) for i in range(2)])


def test_the_option_replaces_the_unets_attention_and_keeps_the_predictions():
    plain = build_method("dpbridge_tiny", "depth", RunOptions(steps=2))
    bmm = build_method("dpbridge_tiny", "depth", RunOptions(steps=2, bmm_attention=True))
    processors = set(type(p) for p in bmm.model.unet.attn_processors.values())
    assert processors == {BmmAttnProcessor}
    assert not any(isinstance(m, BmmAttnProcessor) for m in bmm.model.vae.modules())
    assert torch.allclose(_predict(bmm), _predict(plain), atol=1e-4)


@pytest.mark.slow  # inductor compiles the UNet (the processor traced through) and VAE: about 100 s on a small CPU
def test_the_option_under_compile_keeps_the_predictions():
    plain = build_method("dpbridge_tiny", "depth", RunOptions(steps=2))
    compiled = build_method("dpbridge_tiny", "depth", RunOptions(steps=2, bmm_attention=True, compile=True))
    assert torch.allclose(_predict(compiled), _predict(plain), atol=1e-4)


@pytest.mark.parametrize("context_tokens", [None, 8, 40], ids=["self", "cross-short", "cross"])
@pytest.mark.parametrize("bias", [False, True])
def test_the_processor_equals_diffusers_fused_processor(context_tokens, bias):
    """The projections computed transposed (heads as free views) give diffusers' own attention, biases or not."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    torch.manual_seed(0)
    attn = Attention(32, cross_attention_dim=None if context_tokens is None else 24, heads=8, dim_head=4,
                     bias=bias, out_bias=bias)
    x = torch.randn(3, 64, 32)
    context = None if context_tokens is None else torch.randn(3, context_tokens, 24)
    processor = BmmAttnProcessor()
    with torch.inference_mode():
        out = processor(attn, x, context)
        assert torch.allclose(out, AttnProcessor2_0()(attn, x, context), atol=1e-5)
    assert out.shape == (3, 64, 32) and out.is_contiguous()
    assert processor.scratch  # it went through the bmm path


def test_projections_that_are_not_plain_linear_layers_go_to_the_fused_processor():
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    class Adapted(torch.nn.Linear):  # e.g. a LoRA layer: its forward is not W x + b
        def forward(self, x):
            return super().forward(x) * 2

    attn = Attention(16, heads=2, dim_head=8)
    adapted = Adapted(16, 16, bias=False)
    adapted.weight = attn.to_q.weight
    attn.to_q = adapted
    x = torch.randn(1, 10, 16, generator=torch.Generator().manual_seed(0))
    processor = BmmAttnProcessor()
    with torch.inference_mode():
        assert torch.equal(processor(attn, x), AttnProcessor2_0()(attn, x))
    assert processor.scratch == {}


def test_attention_it_does_not_handle_goes_to_the_fused_processor():
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    attn = Attention(16, heads=2, dim_head=8, residual_connection=True)  # a residual: not plain attention
    x = torch.randn(1, 10, 16, generator=torch.Generator().manual_seed(0))
    processor = BmmAttnProcessor()
    with torch.inference_mode():
        assert torch.equal(processor(attn, x), AttnProcessor2_0()(attn, x))
        mask = torch.ones(1, 10, dtype=torch.bool)
        assert torch.equal(processor(attn, x, attention_mask=mask), AttnProcessor2_0()(attn, x, attention_mask=mask))
    assert processor.scratch == {}  # nothing went through the bmm path


def test_the_option_enters_the_run_and_latency_keys_only_when_on():
    run_cfg = RunConfig()
    assert config_key(run_cfg) != config_key(dataclasses.replace(run_cfg, bmm_attention=True))
    assert "bmm_attention" not in study_settings(LatencyConfig())
    assert study_settings(LatencyConfig(bmm_attention=True))["bmm_attention"] is True
