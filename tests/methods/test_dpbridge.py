import pytest
import torch

from methods.backbones import load_backbone, widen_conv_in
from methods.dpbridge import DPBridgeConfig, build_model, load_checkpoint, per_sample_noise


def test_widened_conv_in_keeps_the_output_when_both_halves_see_the_same_latent(tiny_backbone_dir):
    unet = load_backbone(tiny_backbone_dir).unet
    x = torch.randn(2, 4, 16, 16)
    before = unet.conv_in(x)
    widen_conv_in(unet)
    assert unet.conv_in.in_channels == 8 and unet.config.in_channels == 8
    assert torch.allclose(unet.conv_in(torch.cat([x, x], 1)), before, atol=1e-5)


def _model(folder, **kw):
    return build_model(DPBridgeConfig(backbone=str(folder), **kw))


def test_loss_terms_and_gradients(tiny_backbone_dir):
    model = _model(tiny_backbone_dir)
    b = 4
    x_T, x_0, noise = torch.randn(b, 4, 16, 16), torch.randn(b, 4, 16, 16), torch.randn(b, 4, 16, 16)
    target, valid = torch.rand(b, 3, 64, 64) * 2 - 1, torch.ones(b, 1, 64, 64, dtype=torch.bool)
    t = torch.tensor([10, 500, 800, 999])  # 800 and 999 are past ic_max_k: no IC for them
    out = model.loss(x_T, x_0, target, valid, t, noise)
    assert set(out) == {"loss", "l_eps", "l_ic"}
    assert torch.isclose(out["loss"].detach(), out["l_eps"] + out["l_ic"])
    out["loss"].backward()
    assert model.unet.conv_in.weight.grad is not None
    assert all(p.grad is None for p in model.vae.parameters())  # frozen VAE


def test_top_t_fraction_moves_that_share_of_training_times_to_t_T_minus_1(tiny_backbone_dir):
    uniform, topped = _model(tiny_backbone_dir), _model(tiny_backbone_dir, top_t_fraction=0.5)
    base = uniform.draw_times(4000, torch.Generator().manual_seed(3))
    assert base.min() >= 1 and base.max() <= 999 and (base == 999).float().mean() < 0.01  # the paper's U{1..999}
    t = topped.draw_times(4000, torch.Generator().manual_seed(3))
    assert t.min() >= 1 and t.max() <= 999
    assert abs((t == 999).float().mean().item() - 0.5) < 0.03
    assert torch.equal(t[t != 999], base[t != 999])  # the rest is the uniform draw itself


def test_image_consistency_skipped_when_no_sample_is_well_conditioned(tiny_backbone_dir):
    model = _model(tiny_backbone_dir)
    z = torch.randn(2, 4, 16, 16)
    out = model.loss(z, z, torch.zeros(2, 3, 64, 64), torch.ones(2, 1, 64, 64, dtype=torch.bool),
                     torch.tensor([900, 950]), torch.randn(2, 4, 16, 16))
    assert "l_ic" not in out


def test_prediction_of_a_sample_does_not_depend_on_its_batch(tiny_backbone_dir):
    model = _model(tiny_backbone_dir).eval()
    rgb = torch.rand(3, 3, 64, 64) * 2 - 1
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]
    together = model.predict_image(rgb, 3, 0.5, gens([1, 2, 3]))
    alone = model.predict_image(rgb[1:2], 3, 0.5, gens([2]))
    assert torch.allclose(together[1:2], alone, atol=1e-5)
    again = model.predict_image(rgb, 3, 0.5, gens([1, 2, 3]))
    assert torch.equal(together, again)
    other_seed = model.predict_image(rgb[1:2], 3, 0.5, gens([9]))
    assert not torch.allclose(other_seed, alone)


def test_an_ensemble_averages_successive_samples_of_each_images_generator(tiny_backbone_dir):
    model = _model(tiny_backbone_dir).eval()
    rgb = torch.rand(2, 3, 64, 64) * 2 - 1
    gens = [torch.Generator().manual_seed(s) for s in (4, 5)]
    members = [model.predict_image(rgb, 2, 0.0, gens) for _ in range(3)]  # the generators advance
    ensemble = model.predict_image(rgb, 2, 0.0, [torch.Generator().manual_seed(s) for s in (4, 5)], ensemble=3)
    assert torch.allclose(ensemble, sum(members) / 3, atol=1e-6)
    assert not torch.allclose(ensemble, members[0], atol=1e-3)
    with pytest.raises(ValueError, match="ensemble must be >= 1"):
        model.predict_image(rgb, 2, 0.0, gens, ensemble=0)


def test_the_ensemble_size_is_recorded_and_one_for_a_deterministic_method():
    from harness.registry import method_class
    from methods.base import RunOptions
    assert method_class("dpbridge_tiny")("depth", RunOptions(ensemble_size=3)).describe()["ensemble_size"] == 3
    assert method_class("dpbridge_tiny")("depth", RunOptions()).describe()["ensemble_size"] == 1
    assert method_class("regressor_tiny")("depth", RunOptions(ensemble_size=3)).describe()["ensemble_size"] == 1
    with pytest.raises(ValueError, match="--ensemble must be >= 1"):
        method_class("dpbridge_tiny")("depth", RunOptions(ensemble_size=-2))


def test_per_sample_noise_needs_one_generator_per_image():
    with pytest.raises(ValueError, match="one generator per image"):
        per_sample_noise(torch.zeros(2, 4, 4, 4), [torch.Generator()])


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown DPBridge config keys"):
        DPBridgeConfig.from_dict({"task": "depth", "dann": "A"})


def test_missing_checkpoint_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="trained_config.json is missing.*harness train"):
        load_checkpoint(tmp_path)


def test_incomplete_backbone_folder_lists_what_is_needed(tmp_path):
    with pytest.raises(FileNotFoundError, match="vae/config.json"):
        load_backbone(tmp_path)


def test_from_scratch_variant_has_the_same_shape_but_other_weights(tiny_backbone_dir):
    tuned, scratch = _model(tiny_backbone_dir), _model(tiny_backbone_dir, finetune=False)
    a, b = tuned.unet.state_dict(), scratch.unet.state_dict()
    assert a.keys() == b.keys()
    assert not torch.equal(a["down_blocks.0.resnets.0.conv1.weight"], b["down_blocks.0.resnets.0.conv1.weight"])


@pytest.mark.parametrize("settings, message", [({"top_t_fraction": 2.0}, "top_t_fraction=2.0"),
                                               ({"lambda_ic": -1.0}, "lambda_ic=-1.0"),
                                               ({"default_steps": 0}, "default_steps=0"),
                                               ({"dan": "B", "dan_timestep": "snr_matched"},
                                                "dan_timestep=snr_matched .expected t unless dan=A")])
def test_settings_out_of_range_are_refused(settings, message):
    from methods.dpbridge import DPBridgeConfig

    with pytest.raises(ValueError, match=f"out of range: {message}"):
        DPBridgeConfig(**settings)
    assert DPBridgeConfig(dan="A", dan_timestep="snr_matched").dan_timestep == "snr_matched"
