"""Tests of methods/bridge.py against /work/shared/paper/math.md sections 1-4 (CPU, float64, small)."""
import math

import pytest
import torch

from methods.bridge import BridgeSchedule, sampling_grid

T = 1000
F64 = torch.float64


@pytest.fixture(scope="module")
def sched():
    return BridgeSchedule()


def _pair(seed, shape=(2, 4, 3, 3), dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype)


def _oracle(sched, x0, xT):
    return lambda x, t: sched.eps_from_x0(x, xT, x0, t)


# ------------------------------------------------------------------ section 1: schedule and Eq. 3
def test_endpoints_exact(sched):
    a, b, c = sched.marginal_coefficients(0)
    assert (float(a), float(b), float(c)) == (0.0, 1.0, 0.0)
    a, b, c = sched.marginal_coefficients(T)
    assert (float(a), float(b), float(c)) == (1.0, 0.0, 0.0)
    for v in (sched.a, sched.b, sched.c):
        assert not torch.isnan(v).any()


@pytest.mark.parametrize("k,expected", [
    (249, (0.027086, 0.819998, 0.569067)),
    (499, (0.094015, 0.520526, 0.844709)),
    (899, (0.565358, 0.080983, 0.817044)),
    (998, (0.993925, 0.000828, 0.109541)),
])
def test_table_values(sched, k, expected):
    got = sched.marginal_coefficients(torch.tensor([k + 1]))
    for g, e in zip(got, expected):
        assert g.dtype == F64 and g.shape == (1,)
        assert abs(float(g[0]) - e) <= 1e-6


def test_terminal_schedule_values(sched):
    assert abs(float(sched.alphabar[T]) - 0.0046601) < 1e-7
    assert abs(float(sched.snr[T]) - 0.00468192) < 1e-8
    assert float(sched.alphabar[0]) == 1.0 and math.isinf(float(sched.snr[0]))
    assert sched.betas.shape == (T + 1,) and float(sched.betas[0]) == 0.0
    assert abs(float(sched.betas[1]) - 0.00085) < 1e-15 and abs(float(sched.betas[T]) - 0.012) < 1e-15


def test_snr_identity(sched):
    t = torch.arange(1, T)
    a, b, c = sched.marginal_coefficients(t)
    torch.testing.assert_close(b ** 2 / c ** 2, sched.snr[1:T] - sched.snr[T], rtol=1e-10, atol=0)


def test_q_sample_and_x0_from_eps_roundtrip(sched):
    x0, xT = _pair(0)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    t = torch.tensor([3, 998])
    xt = sched.q_sample(x0, xT, t, eps)
    a, b, c = sched.marginal_coefficients(t)
    torch.testing.assert_close(xt[1], a[1] * xT[1] + b[1] * x0[1] + c[1] * eps[1], rtol=0, atol=1e-14)
    torch.testing.assert_close(sched.x0_from_eps(xt, xT, eps, t), x0, rtol=0, atol=1e-9)
    torch.testing.assert_close(sched.eps_from_x0(xt, xT, x0, t), eps, rtol=0, atol=1e-12)
    x32 = sched.q_sample(x0.float(), xT.float(), t, eps.float())
    assert x32.dtype == torch.float32
    with pytest.raises(ValueError):
        sched.x0_from_eps(xt, xT, eps, torch.tensor([T, 5]))
    with pytest.raises(ValueError):
        sched.marginal_coefficients(T + 1)
    with pytest.raises(TypeError):
        sched.marginal_coefficients(torch.tensor([1.5]))


# ------------------------------------------------------------------ section 3: DAN (Eq. 12)
def test_dan_a_coefficients_unit_norm(sched):
    t = torch.arange(0, T)
    ap, sp = sched.dan_coefficients(t)
    torch.testing.assert_close(ap ** 2 + sp ** 2, torch.ones(T, dtype=F64), rtol=0, atol=1e-14)
    # it is a VP sample at SNR' = SNR_t - SNR_T
    torch.testing.assert_close(ap[1:] ** 2 / sp[1:] ** 2, sched.snr[1:T] - sched.snr[T], rtol=1e-10, atol=0)


def test_dan_variants(sched):
    x0, xT = _pair(2)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    t = torch.tensor([10, 900])
    xt = sched.q_sample(x0, xT, t, eps)
    ap, sp = sched.dan_coefficients(t, like=xt)
    torch.testing.assert_close(sched.dan(xt, xT, t, "A"), ap * x0 + sp * eps, rtol=0, atol=1e-12)
    a, b, c = sched.marginal_coefficients(t, like=xt)
    torch.testing.assert_close(sched.dan(xt, xT, t, "B"), xt / (a ** 2 + b ** 2 + c ** 2).sqrt(), rtol=0, atol=0)
    assert sched.dan(xt, xT, t, "off") is xt
    assert not torch.allclose(sched.dan(xt, xT, t, "A"), xt)
    with pytest.raises(ValueError):
        sched.dan(xt, xT, t, "C")
    with pytest.raises(ValueError):
        sched.dan(xt, xT, torch.tensor([10, T]), "A")


def test_dan_timestep(sched):
    t = torch.tensor([0, 1, 5, 250, 500, 900, 998, 999])
    assert torch.equal(sched.dan_timestep(t), t)
    u = sched.dan_timestep(t, "snr_matched")
    assert u.dtype == torch.int64 and u.shape == t.shape
    assert int(u[0]) == 0 and int(u[1]) == 1
    assert bool((u >= t).all()) and bool((u <= T).all())
    assert int(u[5]) > 900  # SNR' < SNR_t noticeably near T
    for ti, ui in zip(t[1:].tolist(), u[1:].tolist()):
        target = math.log(float(sched.snr[ti] - sched.snr[T]))
        d = abs(math.log(float(sched.snr[ui])) - target)
        for v in (ui - 1, ui + 1):
            if 1 <= v <= T:
                assert d <= abs(math.log(float(sched.snr[v])) - target)
    with pytest.raises(ValueError):
        sched.dan_timestep(t, "k")


# ------------------------------------------------------------------ section 2: posterior (Eq. 6-7)
def test_posterior_variance_formula(sched):
    t = torch.arange(1, T + 1)
    _, _, var = sched.posterior_coefficients(t)
    ref = sched.betas[1:] * (1 - sched.alphabar[:-1]) / (1 - sched.alphabar[1:])
    torch.testing.assert_close(var, ref, rtol=1e-10, atol=1e-300)
    assert float(var[0]) == 0.0


def test_posterior_pushes_marginal_analytically(sched):
    """coef_xt * N(a_t xT + b_t x0, c_t^2) + coef_x0 x0 + N(0, var) == N(a_s xT + b_s x0, c_s^2), all t."""
    t = torch.arange(1, T)
    cx, c0, var = sched.posterior_coefficients(t)
    a_t, b_t, c_t = sched.marginal_coefficients(t)
    a_s, b_s, c_s = sched.marginal_coefficients(t - 1)
    torch.testing.assert_close(cx * a_t, a_s, rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(cx * b_t + c0, b_s, rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(cx ** 2 * c_t ** 2 + var, c_s ** 2, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("t", [2, 7, 400, 999, 1000])
def test_posterior_pushes_marginal_statistically(sched, t):
    n, d = 40000, 6
    g = torch.Generator().manual_seed(100 + t)
    x0 = torch.linspace(-1.5, 1.0, d, dtype=F64)
    xT = torch.linspace(2.0, -0.5, d, dtype=F64)
    tt = torch.full((n,), t)
    x_t = sched.q_sample(x0.expand(n, d), xT.expand(n, d), tt, torch.randn(n, d, generator=g, dtype=F64))
    mean, var = sched.posterior(x_t, x0.expand(n, d), tt)
    x_s = mean + var.sqrt() * torch.randn(n, d, generator=g, dtype=F64)
    a, b, c = (float(v) for v in sched.marginal_coefficients(t - 1))
    want_mean, want_var = a * xT + b * x0, c ** 2
    # 6 standard errors: se(mean) = sqrt(var / n), se(var) ~ var * sqrt(2 / (n - 1))
    assert ((x_s.mean(0) - want_mean).abs() <= 6 * math.sqrt(want_var / n)).all()
    assert ((x_s.var(0) - want_var).abs() <= 6 * want_var * math.sqrt(2 / (n - 1))).all()


def test_posterior_to_zero_is_x0(sched):
    x0, xT = _pair(4)
    xt = sched.q_sample(x0, xT, 1, torch.randn(x0.shape, generator=torch.Generator().manual_seed(5), dtype=F64))
    mean, var = sched.posterior(xt, x0, 1)
    torch.testing.assert_close(mean, x0, rtol=0, atol=1e-15)
    assert float(var) == 0.0
    with pytest.raises(ValueError):
        sched.posterior(xt, x0, 0)


# ------------------------------------------------------------------ section 4: grid and sampler (Eq. 13)
def test_sampling_grid_values():
    assert sampling_grid(1) == [999, 0]
    assert sampling_grid(2) == [999, 500, 0]
    assert sampling_grid(999) == list(range(999, -1, -1))
    g = sampling_grid(50)
    assert len(g) == 51 and g[0] == 999 and g[-1] == 0 and g[1] == round(49 * 999 / 50)
    assert all(x > y for x, y in zip(g, g[1:]))
    assert sampling_grid([900, 517, 3, 0]) == [900, 517, 3, 0]


@pytest.mark.parametrize("bad", [0, -1, 1000, 2.5, True, "10", [999], [999, 5], [1000, 0],
                                 [500, 500, 0], [10, 20, 0], [5.0, 0], []])
def test_sampling_grid_validation(bad):
    with pytest.raises(ValueError):
        sampling_grid(bad)


@pytest.mark.parametrize("grid", [1, 2, 7, 10, 50, 999, [998, 731, 730, 402, 57, 56, 3, 1, 0]])
def test_deterministic_sampler_oracle_recovers_x0(sched, grid):
    x0, xT = _pair(6)
    kw = dict(grid=grid) if isinstance(grid, list) else dict(num_steps=grid)
    out = sched.sample(_oracle(sched, x0, xT), xT, eta=0.0, generator=torch.Generator().manual_seed(0), **kw)
    assert out.dtype == F64 and out.shape == x0.shape
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-10)


def test_stochastic_sampler_oracle_recovers_x0(sched):
    x0, xT = _pair(7)
    out = sched.sample(_oracle(sched, x0, xT), xT, 10, eta=1.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-10)


@pytest.mark.parametrize("t", [1, 2, 50, 999])
def test_eta_one_step_equals_posterior(sched, t):
    x0, xT = _pair(8)
    xt = sched.q_sample(x0, xT, t, torch.randn(x0.shape, generator=torch.Generator().manual_seed(9), dtype=F64))
    eps = sched.eps_from_x0(xt, xT, x0, t)
    mean, var = sched.posterior(xt, x0, t)
    zero = torch.zeros_like(x0)
    step_mean = sched.sampler_step(xt, xT, eps, t, t - 1, eta=1.0, noise=zero)
    torch.testing.assert_close(step_mean, mean, rtol=0, atol=1e-12)
    rho = sched.sampler_noise_std(t, t - 1, 1.0)
    assert abs(float(rho) ** 2 - float(var)) <= 1e-12 * max(float(var), 1e-300)
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(10), dtype=F64)
    torch.testing.assert_close(sched.sampler_step(xt, xT, eps, t, t - 1, 1.0, z) - step_mean, rho * z,
                               rtol=0, atol=1e-12)


def test_rho_zero_at_s_zero_and_eta_validation(sched):
    assert float(sched.sampler_noise_std(500, 0, 1.0)) == 0.0
    assert float(sched.sampler_noise_std(500, 100, 0.0)) == 0.0
    assert float(sched.sampler_noise_std(500, 100, 0.5)) > 0.0
    with pytest.raises(ValueError):
        sched.sampler_noise_std(500, 100, 1.5)
    x0, xT = _pair(11)
    with pytest.raises(ValueError):  # rho > 0 but no noise given
        sched.sampler_step(x0, xT, x0, 500, 100, 0.5, None)


def test_sampler_never_calls_eps_fn_at_T(sched):
    x0, xT = _pair(12)
    calls = []

    def eps_fn(x, t):
        calls.append(t.clone())
        assert t.dtype == torch.int64 and t.shape == (x.shape[0],)
        return 0.1 * x

    for grid in (5, 999, [999, 3, 0]):
        calls.clear()
        kw = dict(grid=grid) if isinstance(grid, list) else dict(num_steps=grid)
        sched.sample(eps_fn, xT, eta=0.5, generator=torch.Generator().manual_seed(0), **kw)
        seen = [int(c[0]) for c in calls]
        grid_list = sampling_grid(grid)
        assert seen == grid_list[:-1]
        assert max(seen) <= T - 1 and min(seen) >= 1
    with pytest.raises(ValueError):
        sched.sample(eps_fn, xT, 5)  # no generator


def test_sampler_times_stay_on_the_cpu_whatever_the_latents_device(sched):
    """On a GPU, times on the device would cost a device-to-host sync at every coefficient lookup of every step;
    the meta device stands in for a GPU here (shapes and devices, no data)."""
    _, xT = _pair(14)
    devices = []

    def eps_fn(x, t):
        devices.append((t.device.type, x.device.type))
        return torch.zeros_like(x)

    out = sched.sample(eps_fn, xT.to("meta"), 3, noise_fn=lambda: torch.zeros_like(xT, device="meta"))
    assert out.device.type == "meta" and devices == [("cpu", "meta")] * 3


def test_sampler_rng_usage_and_reproducibility(sched):
    _, xT = _pair(13)
    eps_fn = lambda x, t: 0.1 * x  # noqa: E731

    def run(seed, eta):
        return sched.sample(eps_fn, xT, 10, eta=eta, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(1, 0.0), run(1, 0.0))
    assert torch.equal(run(1, 0.7), run(1, 0.7))
    assert not torch.allclose(run(1, 0.7), run(2, 0.7))
    assert not torch.allclose(run(1, 0.0), run(2, 0.0))  # start noise differs
    # eta = 0 draws exactly the start noise and nothing else
    g = torch.Generator().manual_seed(3)
    sched.sample(eps_fn, xT, 10, eta=0.0, generator=g)
    ref = torch.Generator().manual_seed(3)
    torch.randn(xT.shape, generator=ref, dtype=F64)
    assert torch.equal(g.get_state(), ref.get_state())
    # eta > 0 draws one extra noise per step with s > 0 (9 of 10 steps)
    g = torch.Generator().manual_seed(3)
    sched.sample(eps_fn, xT, 10, eta=0.5, generator=g)
    for _ in range(9):
        torch.randn(xT.shape, generator=ref, dtype=F64)
    assert torch.equal(g.get_state(), ref.get_state())


def test_markov_sample_oracle(sched):
    x0, xT = _pair(14, shape=(1, 2, 2, 2))
    out = sched.markov_sample(_oracle(sched, x0, xT), xT, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-10)


def test_eps_from_v_inverts_the_v_target_for_every_t():
    s = BridgeSchedule()
    g = torch.Generator().manual_seed(3)
    x0, xT, eps = (torch.randn(5, 2, 3, 3, generator=g, dtype=torch.float64) for _ in range(3))
    t = torch.tensor([1, 250, 500, 900, 999])
    x_t = s.q_sample(x0, xT, t, eps)
    alpha_p, sigma_p = s.dan_coefficients(t, like=x_t)
    v = alpha_p * eps - sigma_p * x0
    assert torch.allclose(s.eps_from_v(x_t, xT, v, t), eps, atol=1e-10)
    # a v error moves x0_hat by at most sigma' times that error, even at t = T-1 where b is 8e-4
    x0_hat = s.x0_from_eps(x_t, xT, s.eps_from_v(x_t, xT, v + 0.1, t), t)
    assert (x0_hat - x0).abs().max() <= 0.1 + 1e-9
