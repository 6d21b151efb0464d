"""Pure math of the processes the baselines use, on one time axis: DDPM time t = 0 (clean map latent x_0) ..
T = 1000 (the start of sampling); the UNet sees the diffusers index k = t - 1.

- ``I2SBSchedule``: Image-to-Image Schrödinger Bridge (Liu et al., 2023). Symmetric beta schedule (I2SB's
  ``make_beta_schedule`` with beta_max 0.3, halves mirrored), sigma_t^2 = sum_{i<=t} beta_i (forward std from
  x_0), sigmabar_t^2 = sum_{i>t} beta_i (std toward x_1). Marginal (I2SB Eq. 11, a Gaussian product):
  x_t = sb^2/(s^2+sb^2) x_0 + s^2/(s^2+sb^2) x_1 + sqrt(s^2 sb^2/(s^2+sb^2)) eps. The network predicts
  (x_t - x_0) / sigma_t; the sampler is the posterior of the Brownian motion from x_0 (I2SB's ``p_posterior``),
  its noise scaled by eta (eta = 0 is I2SB's OT-ODE sampler, eta = 1 its DDPM sampler).
- ``BBDMSchedule``: Brownian Bridge Diffusion Model (Li et al., 2023). m_t = t / T, delta_t = 2 s (m_t - m_t^2)
  (s = 1): x_t = (1 - m_t) x_0 + m_t y + sqrt(delta_t) eps. The network predicts x_t - x_0 (BBDM's "grad"
  objective); the sampler is BBDM's skip sampler with eta (eta = 1: the exact posterior on any grid). Two
  departures from BBDM's released code, both named: m_t = t / T (its code: linspace(0.001, 0.999) over the 1000
  indices, so neither end is exact); and at eta < 1 the step keeps the marginal at s (``skip_mean="marginal"``,
  DDIM's construction: eta = 0 is deterministic and, with the true x_0, lands on the marginal) where its code
  keeps the eta = 1 mean coefficient and only scales the noise (``skip_mean="bbdm_code"``).
- ``DDIMSchedule``: the noise-to-map baseline (Marigold's formulation): SD's scaled-linear schedule, v prediction,
  DDIM from pure noise on a trailing grid (eta = 0 deterministic).

Every ``step(x, x0_hat, t, s, eta, z)`` maps the state at t to the state at s < t given a clean estimate; a
sampler with an oracle x0_hat and eta = 0 returns x_0 exactly on any grid (tested).
"""
from __future__ import annotations

from typing import Callable, Literal, Optional, get_args

import torch

T_DEFAULT = 1000
F64 = torch.float64


def at_time(table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """table[t] shaped [B,1,1,1] in like's dtype and device; t int64 [B] (any device) or a python int. The tables
    live on the CPU, which cannot be indexed by a GPU tensor: t moves to them (training draws t on the device; the
    sampler's t is already on the CPU, so sampling never syncs)."""
    t = torch.as_tensor(t, dtype=torch.long).reshape(-1).to(table.device)
    return table[t].to(like.device, like.dtype).view(-1, *([1] * (like.dim() - 1)))


def descending_grid(num_steps: int, T: int = T_DEFAULT) -> list[int]:
    """[T, ..., 0] with num_steps + 1 points, uniform (rounded): every process here starts at t = T."""
    if not 1 <= num_steps <= T:
        raise ValueError(f"steps must be in 1..{T}, got {num_steps}")
    return sorted({round(i * T / num_steps) for i in range(num_steps + 1)}, reverse=True)


def run_sampler(x0_fn: Callable, step_fn: Callable, x_start: torch.Tensor, num_steps: int,
                noise_fn: Optional[Callable[[], torch.Tensor]], eta: float, T: int = T_DEFAULT) -> torch.Tensor:
    """x_start at t = T -> state at t = 0: per grid pair (t, s), x0_hat = x0_fn(x, t[B]); x = step_fn(...)."""
    x = x_start
    grid = descending_grid(num_steps, T)
    for t, s in zip(grid[:-1], grid[1:]):
        tt = torch.full((x.shape[0],), t, dtype=torch.long)  # CPU: the tables live there; net() moves k
        x0_hat = x0_fn(x, tt)
        z = noise_fn() if (eta > 0 and s > 0 and noise_fn is not None) else None
        x = step_fn(x, x0_hat, t, s, eta, z)
    return x


class I2SBSchedule:
    def __init__(self, T: int = T_DEFAULT, beta_min: float = 1e-4, beta_max: float = 0.3):
        betas = torch.linspace(beta_min ** 0.5, (beta_max / T) ** 0.5, T, dtype=F64) ** 2
        half = betas[: T // 2]
        betas = torch.cat([half, half.flip(0)])  # [T], beta for steps 1..T
        zero = torch.zeros(1, dtype=F64)
        self.T = T
        self.var_fwd = torch.cat([zero, betas.cumsum(0)])  # [T+1] sigma_t^2, 0 at t = 0
        self.var_bwd = self.var_fwd[-1] - self.var_fwd  # [T+1] sigmabar_t^2, 0 at t = T
        total = self.var_fwd + self.var_bwd
        self.mu_x0 = self.var_bwd / total
        self.mu_x1 = self.var_fwd / total
        self.std = (self.var_fwd * self.var_bwd / total).sqrt()

    def q_sample(self, x0, x1, t, noise):
        return at_time(self.mu_x0, t, x0) * x0 + at_time(self.mu_x1, t, x0) * x1 + at_time(self.std, t, x0) * noise

    def target(self, x_t, x0, t):
        """The network's regression target (x_t - x_0) / sigma_t (t >= 1)."""
        return (x_t - x0) / at_time(self.var_fwd, t, x_t).sqrt()

    def x0_from_output(self, x_t, out, t):
        return x_t - at_time(self.var_fwd, t, x_t).sqrt() * out

    def step(self, x, x0_hat, t: int, s: int, eta: float, z, y=None):
        """Posterior q(x_s | x_0, x_t) of the Brownian motion from x_0 (I2SB's p_posterior), noise x eta; the
        image latent ``y`` does not enter (the posterior is independent of x_1 given x_t)."""
        vt, vs = float(self.var_fwd[t]), float(self.var_fwd[s])
        out = (vt - vs) / vt * x0_hat + vs / vt * x
        if z is not None and eta > 0:
            out = out + eta * (vs * (vt - vs) / vt) ** 0.5 * z
        return out


SkipMean = Literal["marginal", "bbdm_code"]  # BBDM's step at eta < 1: see the module docstring
SKIP_MEANS = get_args(SkipMean)


class BBDMSchedule:
    def __init__(self, T: int = T_DEFAULT, max_var: float = 1.0, skip_mean: SkipMean = "marginal"):
        if skip_mean not in SKIP_MEANS:
            raise ValueError(f"bbdm: unknown skip_mean {skip_mean!r}; expected one of {SKIP_MEANS}")
        self.T, self.skip_mean = T, skip_mean
        self.m = torch.arange(T + 1, dtype=F64) / T  # [T+1] m_t = t / T
        self.var = 2.0 * max_var * (self.m - self.m ** 2)  # [T+1] delta_t, 0 at both ends

    def q_sample(self, x0, y, t, noise):
        m = at_time(self.m, t, x0)
        return (1 - m) * x0 + m * y + at_time(self.var, t, x0).sqrt() * noise

    def target(self, x_t, x0, t):
        """BBDM's "grad" objective: x_t - x_0 = m_t (y - x_0) + sqrt(delta_t) eps."""
        return x_t - x0

    def x0_from_output(self, x_t, out, t):
        return x_t - out

    def step_coefficients(self, t: int, s: int, eta: float) -> tuple[float, float]:
        """(weight of x_t - mean_t, noise std) of BBDM's skip step t -> s with eta."""
        mt, ms, vt, vs = (float(v) for v in (self.m[t], self.m[s], self.var[t], self.var[s]))
        if vt == 0.0:  # x_t carries no noise (t = T: x_T = y): the posterior is the marginal at s
            return 0.0, eta * vs ** 0.5
        a = (1 - mt) / (1 - ms)
        var_post = max((vt - a * a * vs) * vs / vt, 0.0)
        sigma = eta * var_post ** 0.5
        kept = var_post if self.skip_mean == "bbdm_code" else sigma ** 2  # bbdm_code: the eta = 1 mean at any eta
        return ((vs - kept) / vt) ** 0.5, sigma

    def step(self, x, x0_hat, t: int, s: int, eta: float, z, y=None):
        mt, ms = float(self.m[t]), float(self.m[s])
        w, sigma = self.step_coefficients(t, s, eta)
        out = (1 - ms) * x0_hat + ms * y + w * (x - (1 - mt) * x0_hat - mt * y)
        if z is not None and sigma > 0:
            out = out + sigma * z
        return out


class DDIMSchedule:
    def __init__(self, T: int = T_DEFAULT, beta_start: float = 0.00085, beta_end: float = 0.012):
        betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=F64) ** 2  # SD "scaled_linear"
        self.T = T
        self.alphabar = torch.cat([torch.ones(1, dtype=F64), torch.cumprod(1 - betas, 0)])  # [T+1], 1 at t = 0
        self.alpha = self.alphabar.sqrt()
        self.sigma = (1 - self.alphabar).sqrt()

    def q_sample(self, x0, noise, t):
        return at_time(self.alpha, t, x0) * x0 + at_time(self.sigma, t, x0) * noise

    def v_target(self, x0, noise, t):
        return at_time(self.alpha, t, x0) * noise - at_time(self.sigma, t, x0) * x0

    def x0_eps_from_v(self, x_t, v, t):
        a, s = at_time(self.alpha, t, x_t), at_time(self.sigma, t, x_t)
        return a * x_t - s * v, s * x_t + a * v

    def step(self, x, x0_hat, t: int, s: int, eta: float, z):
        """DDIM (Song et al. Eq. 12) from t to s with the eps implied by (x, x0_hat)."""
        at, as_ = float(self.alphabar[t]), float(self.alphabar[s])
        eps_hat = (x - at ** 0.5 * x0_hat) / (1 - at) ** 0.5
        sigma = eta * (((1 - as_) / (1 - at)) * (1 - at / as_)) ** 0.5 if s > 0 else 0.0
        out = as_ ** 0.5 * x0_hat + max(1 - as_ - sigma ** 2, 0.0) ** 0.5 * eps_hat
        if z is not None and sigma > 0:
            out = out + sigma * z
        return out
