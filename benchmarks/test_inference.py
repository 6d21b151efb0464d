"""Speed of the pieces a run is made of (pytest-benchmark; no timed assertions: compare the tables).

    python -m pytest benchmarks --benchmark-enable            (OMP_NUM_THREADS=1 for numbers beside a training job)
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from datasets.base import DatasetSpec, Sample
from datasets.synthetic import SyntheticDepth
from harness.scoring import score_depth, score_normals
from methods.attention import bmm_attention


def test_one_sampler_step(benchmark, depth_method, tiny_input):
    """One step of Eq. 13 at 64 px (latent [1,4,16,16]): the UNet call through DAN plus the update."""
    model = depth_method.model
    rgb, _ = tiny_input
    with torch.inference_mode():
        x_T = model.encode(rgb)  # [1,4,16,16]
        x = x_T + torch.randn_like(x_T)
        t = torch.tensor([500])

        def step():
            eps = model.eps(x, x_T, t)
            return model.schedule.sampler_step(x, x_T, eps, 500, 400)

        out = benchmark(step)
    assert out.shape == x_T.shape


def test_one_image_end_to_end_10_steps(benchmark, depth_method, tiny_input):
    """method.predict on one 64 px image: VAE encode, 10 UNet steps, VAE decode, depth from the image."""
    rgb, _ = tiny_input

    def predict():
        with torch.inference_mode():
            return depth_method.predict(rgb, [torch.Generator().manual_seed(0)])

    out = benchmark(predict)
    assert out.shape == (1, 1, 64, 64)


def _big_sample(seed: int = 0) -> Sample:
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 10.0, size=(480, 640)).astype(np.float32)
    normals = rng.normal(size=(480, 640, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=2, keepdims=True)
    return Sample("bench/0", rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), rng.random((480, 640)) > 0.1,
                  depth=depth, normals=normals)


def test_depth_metrics_480x640(benchmark):
    """Resize a 240x320 prediction to 480x640, least-squares align, clip, every depth metric."""
    sample, spec = _big_sample(), DatasetSpec(task="depth")
    pred = np.random.default_rng(1).uniform(0.1, 1.0, size=(1, 240, 320)).astype(np.float32)
    row = benchmark(score_depth, pred, sample, spec, "least_squares")
    assert np.isfinite(row["abs_rel"])


def test_normal_metrics_480x640(benchmark):
    """Resize, renormalise, angular errors and every normal metric on 480x640."""
    sample = _big_sample()
    pred = np.random.default_rng(1).normal(size=(3, 240, 320)).astype(np.float32)
    row, errors = benchmark(score_normals, pred, sample)
    assert errors.size == int(sample.valid.sum())


def test_adapter_read(benchmark):
    """One tiny-world sample rendered and loaded by its adapter."""
    dataset = SyntheticDepth()
    ids = dataset.ids()
    sample = benchmark(lambda: dataset.load(ids[7]))
    assert sample.depth is not None


@pytest.mark.parametrize("kernel", ["sdpa", "bmm"])
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("source", [256, 8], ids=["self", "cross"])
def test_attention_of_the_first_block(benchmark, batch, kernel, source):
    """The tiny UNet's 16x16 attention (8 heads of dimension 4, 256 queries) against itself (self, 256 tokens) and
    against the 8-token text context (cross) at batch 1 and 8, through PyTorch's fused kernel (sdpa, the default)
    and methods.attention (bmm, --bmm-attention). Self-attention's work is the softmax over 256 x 256 scores per
    head and image, so its time grows with the batch in proportion: divide the batch-8 time by 8 and compare
    (issue 6's batch-scaling target meets this floor; README, Inference cost)."""
    g = torch.Generator().manual_seed(source)
    q, k, v = (torch.randn(batch, 8, n, 4, generator=g) for n in (256, source, source))
    with torch.inference_mode():
        if kernel == "sdpa":
            out = benchmark(torch.nn.functional.scaled_dot_product_attention, q, k, v)
        else:
            q_flat, k_flat, v_flat = (x.reshape(batch * 8, -1, 4) for x in (q, k, v))
            k_t, v_t = (x.transpose(1, 2).contiguous() for x in (k_flat, v_flat))
            out = benchmark(bmm_attention, q_flat, k_t, v_t, {}).transpose(1, 2).reshape(batch, 8, 256, 4)
    assert torch.allclose(out, torch.nn.functional.scaled_dot_product_attention(q, k, v), atol=1e-5)
