import pytest
import torch

from harness.registry import build_method
from methods.base import RunOptions
from methods.inference import inference_modules


def _predict(options: RunOptions, method=None) -> torch.Tensor:
    method = method or build_method("dpbridge_tiny", "depth", options)
    rgb = torch.linspace(-1, 1, 3 * 64 * 64).reshape(1, 3, 64, 64)
    with torch.inference_mode():
        return method.predict(rgb, [torch.Generator().manual_seed(0)])


def test_channels_last_changes_memory_layout_not_results():
    method = build_method("dpbridge_tiny", "depth", RunOptions(steps=1, channels_last=True))
    conv = method.model.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert len(inference_modules(method.model)) == 3  # unet, vae.encoder, vae.decoder
    assert torch.allclose(_predict(RunOptions(), method), _predict(RunOptions(steps=1)), atol=1e-4)


def test_networkless_methods_ignore_the_options():
    method = build_method("ramp", "depth", RunOptions(channels_last=True, compile=True))
    assert method.predict(torch.zeros(1, 3, 8, 8), [torch.Generator()]).shape == (1, 1, 8, 8)


@pytest.mark.slow  # inductor compiles the UNet and VAE: minutes on a small CPU
def test_compiled_networks_give_the_same_results():
    assert torch.allclose(_predict(RunOptions(steps=1, compile=True)), _predict(RunOptions(steps=1)), atol=1e-4)


@pytest.mark.parametrize("dtype, autocast", [("float32", None), ("bfloat16", torch.bfloat16)])
def test_the_dtype_option_runs_the_networks_under_autocast(dtype, autocast):
    method = build_method("dpbridge_tiny", "depth", RunOptions(steps=1, dtype=dtype))
    seen = []  # (autocast on, its dtype) inside each UNet and VAE call
    for module in inference_modules(method.model):
        module.register_forward_hook(lambda *_: seen.append(
            (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))))
    out = _predict(RunOptions(), method)
    assert len(seen) == 3  # encoder, one UNet step, decoder
    assert all(on == (autocast is not None) for on, _ in seen)
    if autocast is not None:
        assert {d for _, d in seen} == {autocast}
    assert out.dtype == torch.float32 and torch.isfinite(out).all()  # maps leave in float32 either way


def test_under_autocast_only_the_networks_run_in_bf16_and_the_sampler_state_stays_float32(monkeypatch):
    """x0_hat divides by b_t (8e-4 at the first step): a bf16 state's rounding would be magnified ~1200x."""
    from methods.bridge import BridgeSchedule

    seen = []
    original = BridgeSchedule.sampler_step
    monkeypatch.setattr(BridgeSchedule, "sampler_step", lambda self, x, xT, eps, *a, **k: (
        seen.append((x.dtype, xT.dtype)), original(self, x, xT, eps, *a, **k))[1])
    method = build_method("dpbridge_tiny", "depth", RunOptions(steps=2, eta=1.0, dtype="bfloat16"))
    rgb = torch.rand(2, 3, 64, 64) * 2 - 1
    method.predict(rgb, [torch.Generator().manual_seed(i) for i in (0, 1)])
    assert seen == [(torch.float32, torch.float32)] * 2
