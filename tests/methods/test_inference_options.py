import pytest
import torch

from harness.registry import build_method
from methods.base import RunOptions
from methods.inference import apply_cpu_workers, inference_modules, predict_in_parts


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


def _predict_batch(method, n: int = 3) -> torch.Tensor:
    rgb = torch.linspace(-1, 1, n * 3 * 64 * 64).reshape(n, 3, 64, 64)
    with torch.inference_mode():
        return method.predict(rgb, [torch.Generator().manual_seed(i) for i in range(n)])


def test_cpu_workers_split_the_batch_without_changing_the_predictions():
    one_call = _predict_batch(build_method("dpbridge_tiny", "depth", RunOptions(steps=2)))
    split = build_method("dpbridge_tiny", "depth", RunOptions(steps=2, cpu_workers=2))
    assert getattr(split.predict, "__func__", None) is None  # routed through predict_in_parts
    parts = _predict_batch(split)  # 3 images: parts of 2 and 1, each image with its own generator
    assert parts.shape == one_call.shape == (3, 1, 64, 64)
    assert torch.allclose(parts, one_call, atol=1e-4)


def test_predict_in_parts_keeps_order_and_raises_a_parts_error():
    seen = []

    def fake(rgb, generators):
        seen.append((rgb.shape[0], torch.is_inference_mode_enabled()))
        if rgb[0, 0, 0, 0] == 2:  # the part that starts at image 2
            raise RuntimeError("out of memory in part two")
        return rgb[:, :1] * 10

    rgb = torch.arange(4.0).reshape(4, 1, 1, 1).expand(4, 3, 2, 2).contiguous()
    with torch.inference_mode():
        out = predict_in_parts(fake, 3)(rgb, [None] * 4)  # parts of 1, 2 and 1 images
    assert out[:, 0, 0, 0].tolist() == [0, 10, 20, 30]
    assert sorted(n for n, _ in seen) == [1, 1, 2] and all(mode for _, mode in seen)  # inference mode carried over
    with pytest.raises(RuntimeError, match="part two"):
        predict_in_parts(fake, 2)(rgb, [None] * 4)  # parts [0, 1] and [2, 3]: the second raises
    assert predict_in_parts(fake, 4)(rgb[:1], [None]).shape == (1, 1, 2, 2)  # one image: a single call


def test_cpu_workers_refused_where_they_cannot_apply():
    ramp = build_method("ramp", "depth", RunOptions(cpu_workers=2))  # no network, nothing to split: as it is
    assert getattr(ramp.predict, "__func__", None) is type(ramp).predict
    with pytest.raises(ValueError, match="cpu_workers must be >= 1"):
        build_method("dpbridge_tiny", "depth", RunOptions(cpu_workers=0))
    with pytest.raises(ValueError, match="choose one of the two"):
        apply_cpu_workers(build_method("dpbridge_tiny", "depth", RunOptions()), RunOptions(cpu_workers=2,
                                                                                          compile=True))
    with pytest.raises(ValueError, match="on cuda leave it at 1"):
        apply_cpu_workers(build_method("dpbridge_tiny", "depth", RunOptions()), RunOptions(cpu_workers=2,
                                                                                          device="cuda"))
