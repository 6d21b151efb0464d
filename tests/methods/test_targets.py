import torch

from methods.targets import (depth_from_image, flip_horizontal, normalise_depth, normals_from_image,
                             normals_to_image, rgb_to_tensor)


def test_normalise_depth_maps_2_and_98_percentiles_to_minus_one_and_one():
    depth = torch.linspace(1.0, 101.0, 101).view(1, 1, 101).expand(1, 101, 101).clone()  # [1,H,W]
    valid = torch.ones_like(depth, dtype=torch.bool)
    img = normalise_depth(depth, valid)
    assert img.shape == (1, 3, 101, 101)
    assert torch.equal(img[:, 0], img[:, 1]) and torch.equal(img[:, 0], img[:, 2])
    # the 2% / 98% quantiles of 1..101 are 3 and 99 -> -1 and 1; beyond them clipped
    assert torch.isclose(img[0, 0, 0, 2], torch.tensor(-1.0), atol=1e-5)
    assert torch.isclose(img[0, 0, 0, 98], torch.tensor(1.0), atol=1e-5)
    assert img.min() == -1 and img.max() == 1
    assert torch.isclose(depth_from_image(img)[0, 0, 0, 50], torch.tensor(0.0), atol=1e-5)


def test_invalid_depth_pixels_become_far():
    depth = torch.rand(1, 8, 8) * 5 + 1
    valid = torch.ones(1, 8, 8, dtype=torch.bool)
    valid[0, 0, 0] = False
    depth[0, 0, 0] = 0.0
    assert normalise_depth(depth, valid)[0, 0, 0, 0] == 1.0


def test_normals_round_trip_and_flip_negates_x():
    n = torch.nn.functional.normalize(torch.randn(2, 4, 5, 3), dim=-1)
    valid = torch.ones(2, 4, 5, dtype=torch.bool)
    img = normals_to_image(n, valid)
    assert torch.allclose(normals_from_image(img).permute(0, 2, 3, 1), n, atol=1e-6)
    flipped = flip_horizontal(img, "normals")
    assert torch.allclose(flipped[:, 0], -img[:, 0].flip(-1))
    assert torch.allclose(flipped[:, 1:], img[:, 1:].flip(-1))
    assert torch.allclose(flip_horizontal(img)[:, 0], img[:, 0].flip(-1))  # a depth/RGB image keeps its sign


def test_rgb_to_tensor_range():
    rgb = torch.tensor([[[0, 255, 128]]], dtype=torch.uint8)[None]  # [1,1,1,3]
    x = rgb_to_tensor(rgb)
    assert x.shape == (1, 3, 1, 1)
    assert x[0, 0, 0, 0] == -1 and x[0, 1, 0, 0] == 1
