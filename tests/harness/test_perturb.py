import numpy as np
import pytest

from harness.perturb import PERTURBATIONS, Condition, conditions, noise_seed, perturb, perturbation
from harness.registry import load_entries

load_entries()
NAMES = sorted(PERTURBATIONS)


def image(h=32, w=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_math_md_defaults_are_registered():
    assert NAMES == ["gaussian", "poisson", "salt_pepper", "uniform"]
    assert perturbation("gaussian").levels == (0.04, 0.08, 0.12, 0.18)
    assert perturbation("uniform").levels == pytest.approx(tuple(np.sqrt(3) * s for s in (0.04, 0.08, 0.12, 0.18)))
    assert perturbation("poisson").levels == (60.0, 25.0)
    assert perturbation("salt_pepper").levels == (0.05, 0.10)
    assert len(conditions(["all"])) == 12


@pytest.mark.parametrize("name", NAMES)
def test_every_perturbation_is_pure_seeded_and_keeps_the_input_type(name):
    rgb = image()
    before = rgb.copy()
    for level in perturbation(name).levels:
        a, b = perturb(rgb, name, level, seed=7), perturb(rgb, name, level, seed=7)
        assert np.array_equal(a, b)  # same sample + seed -> same noise
        assert a.dtype == np.uint8 and a.shape == rgb.shape
        assert not np.array_equal(a, rgb)  # it does perturb
        assert not np.array_equal(a, perturb(rgb, name, level, seed=8))
        f = perturb(rgb.astype(np.float32) / 255, name, level, seed=7)
        assert f.dtype == np.float32 and f.min() >= 0 and f.max() <= 1
    assert np.array_equal(rgb, before)  # the input is never modified


@pytest.mark.parametrize("name", NAMES)
def test_stronger_levels_change_the_image_more(name):
    rgb = image(64, 64)
    levels = sorted(perturbation(name).levels, reverse=name == "poisson")  # smaller lam = noisier
    change = [np.abs(perturb(rgb, name, v, 3).astype(float) - rgb).mean() for v in levels]
    assert all(x < y for x, y in zip(change, change[1:])), change


def test_noise_statistics_match_their_definition():
    gray = np.full((256, 256, 3), 0.5)
    g = perturb(gray, "gaussian", 0.08, 1) - 0.5
    assert g.std() == pytest.approx(0.08, rel=0.02) and abs(g.mean()) < 0.002
    u = perturb(gray, "uniform", 0.2, 1) - 0.5
    assert np.abs(u).max() <= 0.2 and u.std() == pytest.approx(0.2 / np.sqrt(3), rel=0.02)
    p = perturb(gray, "poisson", 25.0, 1)
    assert p.mean() == pytest.approx(0.5, abs=0.002) and p.var() == pytest.approx(0.5 / 25, rel=0.03)
    sp = perturb(gray, "salt_pepper", 0.1, 1)
    hit = (sp != 0.5).any(axis=2)
    assert hit.mean() == pytest.approx(0.1, abs=0.005)
    assert (sp[hit] == 0).mean() == pytest.approx(0.5, abs=0.05) and set(np.unique(sp[hit])) == {0.0, 1.0}


def test_levels_share_their_random_numbers():
    gray = np.full((64, 64, 3), 0.5)  # no clipping at these levels
    small, large = (perturb(gray, "gaussian", s, 5) - 0.5 for s in (0.04, 0.08))
    assert np.allclose(large, 2 * small)
    a, b = (perturb(gray, "salt_pepper", p, 5) != 0.5 for p in (0.05, 0.10))
    assert not (a & ~b).any()  # the 5% pixels are among the 10% ones


def test_condition_seeds_by_sample_not_by_batch_or_order():
    rgb = image()
    c = Condition("gaussian", 0.08)
    assert np.array_equal(c.apply(rgb, "test/00001", 0), perturb(rgb, "gaussian", 0.08, noise_seed(0, "gaussian",
                                                                                                 "test/00001")))
    assert not np.array_equal(c.apply(rgb, "test/00001", 0), c.apply(rgb, "test/00002", 0))
    assert not np.array_equal(c.apply(rgb, "test/00001", 0), c.apply(rgb, "test/00001", 1))
    assert c.label == "gaussian-0.08"


def test_unknown_names_and_levels_fail_clearly():
    with pytest.raises(KeyError, match="Did you mean gaussian"):
        conditions(["gausian"])
    with pytest.raises(ValueError, match="sigma must lie in"):
        conditions(["gaussian"], {"gaussian": (0.0,)})
    with pytest.raises(ValueError, match="p must lie in"):
        conditions(["salt_pepper"], {"salt_pepper": (1.5,)})
    with pytest.raises(ValueError, match="lam must lie in"):
        perturb(image(), "poisson", float("nan"), 0)
    with pytest.raises(ValueError, match="not selected by --noise"):
        conditions(["poisson"], {"gaussian": (0.1,)})
    with pytest.raises(ValueError, match="uint8 or float"):
        perturb(image().astype(np.int32), "gaussian", 0.1, 0)
    with pytest.raises(ValueError, match=r"float RGB in \[0, 1\], got values in \[0, 255\]"):
        perturb(np.array([[[0.0, 128.0, 255.0]]]), "gaussian", 0.1, 0)


def test_the_largest_poisson_rate_accepted_is_one_numpy_can_draw():
    with pytest.raises(ValueError, match=r"lam must lie in \(0, 1e\+09\]"):
        conditions(["poisson"], {"poisson": (1e19,)})  # numpy: "lam value too large", after the clean cell ran
    top = perturb(image(), "poisson", 1e9, 0)
    assert np.abs(top.astype(int) - image()).max() <= 1  # the noise at the cap rounds away


def test_levels_that_table_4_would_print_alike_are_refused():
    with pytest.raises(ValueError, match="4 significant digits.*sigma=0.04"):
        conditions(["gaussian"], {"gaussian": (0.04, 0.040001)})  # distinct folders, one Table 4 label
    assert [c.table_label for c in conditions(["uniform"])][0] == "c=0.06928"


def test_levels_are_data_a_run_can_replace():
    got = conditions(["gaussian", "poisson"], {"gaussian": (0.05, 0.3)})
    assert [(c.name, c.level) for c in got] == [("gaussian", 0.05), ("gaussian", 0.3), ("poisson", 60.0),
                                                ("poisson", 25.0)]
