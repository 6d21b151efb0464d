"""The baselines' processes (methods/processes.py): endpoints, samplers exact with an oracle, posteriors pushing
marginals (statistically)."""
import pytest
import torch

from methods.processes import BBDMSchedule, DDIMSchedule, I2SBSchedule, at_time, descending_grid, run_sampler

F64 = torch.float64
T = 1000


def _pair(seed, shape=(3, 4, 2, 2)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=F64), torch.randn(shape, generator=g, dtype=F64)


def test_grid_starts_at_T_and_ends_at_0():
    assert descending_grid(1) == [1000, 0]
    assert descending_grid(4) == [1000, 750, 500, 250, 0]
    assert len(descending_grid(1000)) == 1001
    with pytest.raises(ValueError, match="steps must be in 1..1000"):
        descending_grid(0)


def test_i2sb_endpoints_and_symmetric_schedule():
    s = I2SBSchedule()
    x0, x1 = _pair(0)
    noise = torch.randn_like(x0)
    assert torch.equal(s.q_sample(x0, x1, 0, noise), x0)
    assert torch.equal(s.q_sample(x0, x1, T, noise), x1)
    betas = s.var_fwd[1:] - s.var_fwd[:-1]
    assert torch.allclose(betas, betas.flip(0))  # I2SB mirrors the first half
    assert abs(float(s.mu_x0[500]) - 0.5) < 1e-12  # symmetric: the midpoint is halfway


def test_bbdm_endpoints_and_variance():
    s = BBDMSchedule()
    x0, y = _pair(1)
    noise = torch.randn_like(x0)
    assert torch.equal(s.q_sample(x0, y, 0, noise), x0)
    assert torch.equal(s.q_sample(x0, y, T, noise), y)
    assert float(s.var.max()) == pytest.approx(0.5)  # 2 (m - m^2) peaks at m = 1/2


@pytest.mark.parametrize("steps", [1, 3, 10, 1000])
def test_oracle_samplers_return_x0(steps):
    x0, x1 = _pair(2)
    i2sb, bbdm, ddim = I2SBSchedule(), BBDMSchedule(), DDIMSchedule()
    oracle = lambda x, t: x0  # noqa: E731
    out = run_sampler(oracle, i2sb.step, x1, steps, None, 0.0)
    assert torch.allclose(out, x0, atol=1e-12)
    out = run_sampler(oracle, lambda x, x0h, t, s, eta, z: bbdm.step(x, x0h, t, s, eta, z, y=x1), x1, steps, None, 0.0)
    assert torch.allclose(out, x0, atol=1e-12)
    out = run_sampler(oracle, ddim.step, torch.randn_like(x0), steps, None, 0.0)
    assert torch.allclose(out, x0, atol=1e-12)


def test_deterministic_bbdm_and_ddim_keep_the_noise_direction():
    """eta = 0 with the true x_0: a state on the marginal with noise eps moves to the marginal at s, same eps."""
    x0, y = _pair(3)
    eps = torch.randn_like(x0)
    bbdm, ddim = BBDMSchedule(), DDIMSchedule()
    for t, s in [(900, 600), (400, 100), (50, 49)]:
        x_t = bbdm.q_sample(x0, y, t, eps)
        assert torch.allclose(bbdm.step(x_t, x0, t, s, 0.0, None, y=y), bbdm.q_sample(x0, y, s, eps), atol=1e-10)
        x_t = ddim.q_sample(x0, eps, t)
        assert torch.allclose(ddim.step(x_t, x0, t, s, 0.0, None), ddim.q_sample(x0, eps, s), atol=1e-10)


def test_bbdm_code_skip_mean_keeps_the_eta1_mean_and_scales_only_the_noise():
    marginal, code = BBDMSchedule(), BBDMSchedule(skip_mean="bbdm_code")
    for t, s in [(900, 600), (400, 100), (50, 49)]:
        exact_w, exact_sigma = marginal.step_coefficients(t, s, 1.0)
        assert code.step_coefficients(t, s, 1.0) == pytest.approx((exact_w, exact_sigma), abs=1e-15)
        for eta in (0.0, 0.5):
            w, sigma = code.step_coefficients(t, s, eta)
            assert w == pytest.approx(exact_w, abs=1e-15) and sigma == pytest.approx(eta * exact_sigma, abs=1e-15)
            assert marginal.step_coefficients(t, s, eta)[0] > w  # the marginal step keeps more of x_t's noise
    with pytest.raises(ValueError, match="unknown skip_mean"):
        BBDMSchedule(skip_mean="ddim")


@pytest.mark.parametrize("name", ["i2sb", "bbdm"])
@pytest.mark.parametrize("t,s", [(1000, 700), (600, 300), (200, 0), (40, 39)])
def test_eta1_step_pushes_the_marginal(name, t, s):
    """x_t ~ q(x_t | x_0, x_1), then one eta = 1 step -> q(x_s | x_0, x_1): mean and std match (200k draws)."""
    n = 200_000
    g = torch.Generator().manual_seed(t * 7 + s)
    x0, x1 = torch.full((n, 1), 0.7, dtype=F64), torch.full((n, 1), -1.3, dtype=F64)
    if name == "i2sb":
        sch = I2SBSchedule()
        step = sch.step
        mean_s = float(sch.mu_x0[s]) * 0.7 - float(sch.mu_x1[s]) * 1.3
        std_s = float(sch.std[s])
    else:
        sch = BBDMSchedule()
        step = lambda x, x0h, t_, s_, eta, z: sch.step(x, x0h, t_, s_, eta, z, y=x1)  # noqa: E731
        mean_s = (1 - float(sch.m[s])) * 0.7 - float(sch.m[s]) * 1.3
        std_s = float(sch.var[s]) ** 0.5
    x_t = sch.q_sample(x0, x1, t, torch.randn(n, 1, generator=g, dtype=F64))
    x_s = step(x_t, x0, t, s, 1.0, torch.randn(n, 1, generator=g, dtype=F64))
    assert float(x_s.mean()) == pytest.approx(mean_s, abs=4 * max(std_s, 1e-3) / n ** 0.5 + 1e-9)
    assert float(x_s.std()) == pytest.approx(std_s, rel=0.01, abs=1e-9)


def test_v_parameterisation_round_trip():
    x0, noise = _pair(4)
    d = DDIMSchedule()
    t = torch.tensor([1, 500, 1000])
    x_t = d.q_sample(x0, noise, t)
    x0_hat, eps_hat = d.x0_eps_from_v(x_t, d.v_target(x0, noise, t), t)
    assert torch.allclose(x0_hat, x0, atol=1e-10) and torch.allclose(eps_hat, noise, atol=1e-10)


def test_sampler_times_stay_on_the_cpu_and_tables_take_any_times():
    """On a GPU, times on the device would sync at each table lookup (the meta device stands in for it here)."""
    x1 = torch.zeros(2, 4, 8, 8, device="meta")
    devices = []

    def x0_fn(x, t):
        devices.append(t.device.type)
        return torch.zeros_like(x)

    out = run_sampler(x0_fn, I2SBSchedule().step, x1, 3, None, 0.0)
    assert out.device.type == "meta" and devices == ["cpu"] * 3
    ddim, like = DDIMSchedule(), torch.zeros(2, 1, 1, 1, dtype=torch.float32)
    assert at_time(ddim.alpha, torch.tensor([0, 999]), like).shape == (2, 1, 1, 1)
    assert at_time(ddim.alpha, 999, like).item() == pytest.approx(float(ddim.alpha[999]))
