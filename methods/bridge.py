"""DPBridge bridge math on Stable Diffusion's discrete VP schedule (pure torch, no I/O, no global RNG).

Follows /work/shared/paper/math.md sections 1-4. Names -> symbols:

    T                      T = 1000 (num_train_timesteps); DDPM time t in 0..T
    t (DDPM) / k           diffusers index k = t - 1 (the caller converts before calling the UNet)
    x0                     x_0, latent of the dense map (target, t = 0)
    xT                     x_T, latent of the RGB image (source, t = T)
    betas[t]               beta_t, t = 1..T (betas[0] = 0), SD "scaled_linear"
    alphabar[t]            alphabar_t = prod_{i<=t} (1 - beta_i), alphabar_0 = 1
    alpha[t], sigma[t]     alpha_t = sqrt(alphabar_t), sigma_t = sqrt(1 - alphabar_t)
    snr[t]                 SNR_t = alpha_t^2 / sigma_t^2 (snr[0] = +inf)
    a, b, c                a_t, b_t, c_t of the bridge marginal (Eq. 3)
    posterior mean / var   q(x_s | x_t, x_0, x_T), s < t (Eq. 6-7; x_T coefficient is zero)
    eps, eps_hat           eps, eps_theta (Eq. 9: x0_hat = (x_t - a_t x_T - c_t eps_hat) / b_t)
    dan                    Distribution Alignment Normalization (Eq. 12), alpha'_t, sigma'_t
    eta, rho               Eq. 13 stochasticity and noise std of the accelerated sampler

Every coefficient is computed in float64 (CPU tables of length T+1, indexed by DDPM t) and cast to the
dtype/device of the tensor it multiplies. Time arguments are python ints or integer tensors of shape [] or
[B]; per-sample coefficients broadcast as [B, 1, 1, 1] against x of shape [B, C, H, W]. Looking up a CUDA time
tensor copies it to the CPU (one sync), which is negligible next to a UNet call.
"""
from __future__ import annotations

import math
import operator
from typing import Callable, Optional, Sequence, Union

import torch

TimeLike = Union[int, torch.Tensor]
DAN_VARIANTS = ("A", "B", "off")
DAN_TIMESTEP_MODES = ("t", "snr_matched")


class BridgeSchedule:
    """SD discrete schedule plus the VP-bridge coefficients derived from it (all float64, length T+1)."""

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012):
        T = int(num_train_timesteps)
        if T < 2:
            raise ValueError(f"num_train_timesteps must be >= 2, got {num_train_timesteps}")
        self.T = T
        f64 = torch.float64
        betas = torch.linspace(math.sqrt(beta_start), math.sqrt(beta_end), T, dtype=f64) ** 2
        self.betas = torch.cat([torch.zeros(1, dtype=f64), betas])            # [T+1], betas[0] = 0
        self.alphabar = torch.cumprod(1.0 - self.betas, 0)                     # [T+1], alphabar[0] = 1
        self.alpha = self.alphabar.sqrt()
        self.sigma = (1.0 - self.alphabar).sqrt()
        snr = self.alphabar / (1.0 - self.alphabar)
        snr[0] = math.inf
        self.snr = snr                                                         # [T+1], snr[0] = +inf
        # Eq. 3 with r_t = SNR_T / SNR_t (r_0 = 0 exactly because snr[0] = inf; r_T = 1 exactly).
        r = self.snr[T] / self.snr
        self.a = self.alpha / self.alpha[T] * r
        self.b = self.alpha * (1.0 - r)
        self.c = (self.sigma ** 2 * (1.0 - r)).clamp_min(0.0).sqrt()

    # ----------------------------------------------------------------- lookup helpers
    def _t(self, t: TimeLike, lo: int = 0, hi: Optional[int] = None, name: str = "t") -> torch.Tensor:
        """Validated int64 CPU tensor of DDPM times in [lo, hi] (hi defaults to T)."""
        hi = self.T if hi is None else hi
        tt = torch.as_tensor(t).detach().to("cpu")
        if tt.is_floating_point() or tt.is_complex() or tt.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer (DDPM time), got dtype {tt.dtype}")
        tt = tt.to(torch.int64)
        if tt.numel() and (int(tt.min()) < lo or int(tt.max()) > hi):
            raise ValueError(f"{name} must lie in [{lo}, {hi}], got range [{int(tt.min())}, {int(tt.max())}]")
        return tt

    @staticmethod
    def _cast(v: torch.Tensor, like: Optional[torch.Tensor]) -> torch.Tensor:
        """float64 [B] or [] -> like's dtype/device, shaped [B, 1, ..., 1] to broadcast against like."""
        if like is None:
            return v
        v = v.to(device=like.device, dtype=like.dtype)
        if v.ndim == 1 and like.ndim > 1:
            v = v.reshape(-1, *([1] * (like.ndim - 1)))
        return v

    def _snr_ratio(self, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """SNR_t / SNR_s in float64 (0 when s = 0)."""
        return self.snr[t] / self.snr[s]

    # ----------------------------------------------------------------- Eq. 3: bridge marginal
    def marginal_coefficients(self, t: TimeLike, like: Optional[torch.Tensor] = None):
        """(a_t, b_t, c_t) of q(x_t | x_0, x_T) = N(a_t x_T + b_t x_0, c_t^2 I)  (Eq. 3).

        Without `like`: float64 CPU tensors of t's shape; with `like`: cast and broadcast to it."""
        tt = self._t(t)
        return tuple(self._cast(v[tt], like) for v in (self.a, self.b, self.c))

    def q_sample(self, x0: torch.Tensor, xT: torch.Tensor, t: TimeLike, noise: torch.Tensor) -> torch.Tensor:
        """x_t = a_t x_T + b_t x_0 + c_t eps  (Eq. 3). x0, xT, noise: [B, C, H, W]; t: [B] or int."""
        a, b, c = self.marginal_coefficients(t, like=x0)
        return a * xT + b * x0 + c * noise

    # ----------------------------------------------------------------- Eq. 6-7: posterior
    def posterior_coefficients(self, t: TimeLike, s: Optional[TimeLike] = None):
        """float64 (coef_xt, coef_x0, var) of q(x_s | x_t, x_0, x_T), 0 <= s < t <= T, s defaults to t-1.

            coef_xt = alpha_t sigma_s^2 / (alpha_s sigma_t^2), coef_x0 = alpha_s (1 - SNR_t/SNR_s),
            var = sigma_s^2 (1 - SNR_t/SNR_s)   (Eq. 6-7; the x_T coefficient is exactly zero)."""
        tt = self._t(t, lo=1)
        ss = tt - 1 if s is None else self._t(s, name="s")
        if bool((ss >= tt).any()):
            raise ValueError("posterior needs s < t")
        r = self._snr_ratio(tt, ss)
        coef_xt = self.alpha[tt] * self.sigma[ss] ** 2 / (self.alpha[ss] * self.sigma[tt] ** 2)
        coef_x0 = self.alpha[ss] * (1.0 - r)
        var = self.sigma[ss] ** 2 * (1.0 - r)
        return coef_xt, coef_x0, var

    def posterior(self, x_t: torch.Tensor, x0: torch.Tensor, t: TimeLike, s: Optional[TimeLike] = None):
        """(mean, var) of q(x_s | x_t, x_0, x_T) (Eq. 6-7), s = t-1 by default. var is broadcastable [B,1,1,1]."""
        coef_xt, coef_x0, var = self.posterior_coefficients(t, s)
        return self._cast(coef_xt, x_t) * x_t + self._cast(coef_x0, x_t) * x0, self._cast(var, x_t)

    # ----------------------------------------------------------------- Eq. 9: eps parametrisation
    def x0_from_eps(self, x_t: torch.Tensor, xT: torch.Tensor, eps: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """x0_hat = (x_t - a_t x_T - c_t eps_hat) / b_t, 0 <= t <= T-1 (b_T = 0 is singular)."""
        tt = self._t(t, hi=self.T - 1)
        a, b, c = (self._cast(v[tt], x_t) for v in (self.a, self.b, self.c))
        return (x_t - a * xT - c * eps) / b

    def eps_from_x0(self, x_t: torch.Tensor, xT: torch.Tensor, x0: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """Oracle noise eps = (x_t - a_t x_T - b_t x_0) / c_t, 1 <= t <= T-1 (inverse of Eq. 3 in eps)."""
        tt = self._t(t, lo=1, hi=self.T - 1)
        a, b, c = (self._cast(v[tt], x_t) for v in (self.a, self.b, self.c))
        return (x_t - a * xT - b * x0) / c

    # ----------------------------------------------------------------- Eq. 12: DAN
    def dan_coefficients(self, t: TimeLike, like: Optional[torch.Tensor] = None):
        """(alpha'_t, sigma'_t) = (b_t, c_t) / sqrt(b_t^2 + c_t^2), 0 <= t <= T-1 (squares sum to 1)."""
        tt = self._t(t, hi=self.T - 1)
        n = (self.b[tt] ** 2 + self.c[tt] ** 2).sqrt()
        return self._cast(self.b[tt] / n, like), self._cast(self.c[tt] / n, like)

    def eps_from_v(self, x_t: torch.Tensor, xT: torch.Tensor, v: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """eps from v = alpha'_t eps - sigma'_t x_0 in the DAN-A frame x~_t = alpha'_t x_0 + sigma'_t eps:
        eps = sigma'_t x~_t + alpha'_t v (well conditioned up to t = T-1, unlike x_0 from eps near T)."""
        alpha_p, sigma_p = self.dan_coefficients(t, like=x_t)
        return sigma_p * self.dan(x_t, xT, t, "A") + alpha_p * v

    def dan(self, x_t: torch.Tensor, xT: torch.Tensor, t: TimeLike, variant: str = "A") -> torch.Tensor:
        """Network input for the x_t slot (Eq. 12). variant:
        "A" (default): (x_t - a_t x_T) / sqrt(b_t^2 + c_t^2) = alpha'_t x_0 + sigma'_t eps, t <= T-1;
        "B": x_t / sqrt(a_t^2 + b_t^2 + c_t^2);  "off": x_t unchanged."""
        if variant == "off":
            return x_t
        if variant == "A":
            tt = self._t(t, hi=self.T - 1)
            a = self._cast(self.a[tt], x_t)
            n = self._cast((self.b[tt] ** 2 + self.c[tt] ** 2).sqrt(), x_t)
            return (x_t - a * xT) / n
        if variant == "B":
            tt = self._t(t)
            n = self._cast((self.a[tt] ** 2 + self.b[tt] ** 2 + self.c[tt] ** 2).sqrt(), x_t)
            return x_t / n
        raise ValueError(f"unknown DAN variant {variant!r}; expected one of {DAN_VARIANTS}")

    def dan_timestep(self, t: TimeLike, mode: str = "t") -> torch.Tensor:
        """DDPM timestep to embed in the UNet for the DAN-A input (the caller passes k = result - 1).

        mode "t" (default): t unchanged. mode "snr_matched": the u in 1..T minimising
        |log SNR_u - log SNR'_t| with SNR'_t = SNR_t - SNR_T (u >= t; t = 0 maps to 0).
        Returns an int64 tensor of t's shape on t's device (CPU for python ints)."""
        device = t.device if isinstance(t, torch.Tensor) else torch.device("cpu")
        tt = self._t(t)
        if mode == "t":
            return tt.to(device)
        if mode != "snr_matched":
            raise ValueError(f"unknown dan_timestep mode {mode!r}; expected one of {DAN_TIMESTEP_MODES}")
        flat = tt.reshape(-1)
        inner = (flat > 0) & (flat < self.T)
        target = torch.log(self.snr[flat.clamp(1, self.T - 1)] - self.snr[self.T])       # [N]
        log_snr = torch.log(self.snr[1:])                                                   # [T], u = 1..T
        u = (log_snr[None, :] - target[:, None]).abs().argmin(dim=1) + 1                   # [N]
        out = torch.where(inner, u, flat)                                                   # 0 -> 0, T -> T
        return out.reshape(tt.shape).to(device)

    # ----------------------------------------------------------------- Eq. 13: sampler
    def sampler_noise_std(self, t: TimeLike, s: TimeLike, eta: float) -> torch.Tensor:
        """rho = eta sigma_s sqrt(1 - SNR_t / SNR_s) (Eq. 13), float64; exactly 0 when s = 0. Needs 0 <= eta <= 1."""
        if not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {eta}")
        tt, ss = self._t(t, lo=1, hi=self.T - 1), self._t(s, name="s")
        return float(eta) * self.sigma[ss] * (1.0 - self._snr_ratio(tt, ss)).clamp_min(0.0).sqrt()

    def sampler_step(self, x: torch.Tensor, xT: torch.Tensor, eps_hat: torch.Tensor,
                     t: TimeLike, s: TimeLike, eta: float = 0.0, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One step t -> s < t of Eq. 13 / Algorithm 2 (all tensors [B, C, H, W]):

            x0_hat = (x - a_t x_T - c_t eps_hat) / b_t
            x_s    = a_s x_T + b_s x0_hat + sqrt(c_s^2 - rho^2) eps_hat + rho z.
        `noise` (z) may be None only when rho = 0 (eta = 0 or s = 0)."""
        rho = self.sampler_noise_std(t, s, eta)
        ss = self._t(s, name="s")
        if bool((ss >= self._t(t)).any()):
            raise ValueError("sampler_step needs s < t")
        x0_hat = self.x0_from_eps(x, xT, eps_hat, t)
        dir_coef = (self.c[ss] ** 2 - rho ** 2).clamp_min(0.0).sqrt()
        a_s, b_s = self._cast(self.a[ss], x), self._cast(self.b[ss], x)
        out = a_s * xT + b_s * x0_hat + self._cast(dir_coef, x) * eps_hat
        if bool((rho > 0).any()):
            if noise is None:
                raise ValueError("sampler_step with rho > 0 needs noise")
            out = out + self._cast(rho, x) * noise
        return out

    def sample(self, eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], xT: torch.Tensor,
               num_steps: Optional[int] = None, eta: float = 0.0, generator: Optional[torch.Generator] = None,
               grid: Optional[Sequence[int]] = None,
               noise_fn: Optional[Callable[[], torch.Tensor]] = None) -> torch.Tensor:
        """Algorithm 2 / Eq. 13: x_0 estimate from the image latent xT [B, C, H, W].

        grid: custom descending grid (see sampling_grid), else the uniform grid of num_steps steps.
        eps_fn(x, t) -> eps_hat, with t an int64 tensor [B] of DDPM time (1 <= t <= T-1, never T) on the CPU, where
        the schedule's coefficients are looked up (t on a GPU would cost a device-to-host sync per lookup); the
        caller applies DAN and hands the UNet k = t - 1 on x's device. All noise comes from `generator` (on xT's
        device): the start noise z of x = a_{tau_N} x_T + c_{tau_N} z, plus one draw per step with rho > 0 only.
        With the full grid T-1..0 and eta = 1 this is the Markovian ancestral sampler of Eq. 6-7 (markov_sample)."""
        if (generator is None) == (noise_fn is None):
            raise ValueError("sample needs exactly one of an explicit torch.Generator or a noise_fn (no global RNG)")
        if grid is None:
            if num_steps is None:
                raise ValueError("give num_steps or grid")
            taus = sampling_grid(num_steps, self.T)
        else:
            taus = sampling_grid(grid, self.T)
            if num_steps is not None and num_steps != len(taus) - 1:
                raise ValueError(f"num_steps={num_steps} disagrees with grid of {len(taus) - 1} steps")
        if not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {eta}")

        def randn():
            if noise_fn is not None:  # e.g. one generator per image, so a result never depends on its batch
                return noise_fn()
            return torch.randn(xT.shape, generator=generator, device=xT.device, dtype=xT.dtype)

        a, _, c = self.marginal_coefficients(taus[0], like=xT)
        x = a * xT + c * randn()                                                  # [B, C, H, W]
        for t, s in zip(taus[:-1], taus[1:]):
            t_vec = torch.full((xT.shape[0],), t, dtype=torch.int64)   # [B], CPU
            eps_hat = eps_fn(x, t_vec)
            stochastic = float(eta) > 0.0 and s > 0
            x = self.sampler_step(x, xT, eps_hat, t, s, eta, randn() if stochastic else None)
        return x

    def markov_sample(self, eps_fn, xT: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Markovian ancestral sampler: every step t -> t-1 from T-1 to 0 with eta = 1 (the posterior of Eq. 6-7)."""
        return self.sample(eps_fn, xT, grid=list(range(self.T - 1, -1, -1)), eta=1.0, generator=generator)


# --------------------------------------------------------------------- Eq. 13: sampling grid
def _as_int(value) -> int:
    """operator.index, refusing bools (and floats, via index)."""
    if isinstance(value, bool):
        raise TypeError(f"bool {value!r} is not a timestep")
    return operator.index(value)


def sampling_grid(num_steps: Union[int, Sequence[int]], T: int = 1000) -> list:
    """Descending DDPM-time grid [tau_N, ..., tau_1, tau_0 = 0].

    int N (1 <= N <= T-1): uniform tau_i = round(i (T-1) / N), rounding halves up (exact integer arithmetic),
    so tau_N = T-1 (k = T-2 = 998) and t = T is never visited. A sequence is a custom grid: validated to be
    integers, strictly decreasing, ending at 0, with first element <= T-1 and at least one step."""
    try:
        N = _as_int(num_steps)
    except TypeError:
        N = None
    if isinstance(num_steps, bool):
        raise ValueError(f"num_steps must be an int or a sequence of ints, got {num_steps!r}")
    if N is not None:
        if not 1 <= N <= T - 1:
            raise ValueError(f"num_steps must satisfy 1 <= num_steps <= {T - 1}, got {N}")
        return [(2 * i * (T - 1) + N) // (2 * N) for i in range(N, -1, -1)]
    if isinstance(num_steps, (str, bytes)) or not isinstance(num_steps, (Sequence, torch.Tensor)):
        raise ValueError(f"num_steps must be an int or a sequence of ints, got {num_steps!r}")
    try:
        grid = [_as_int(g) for g in num_steps]
    except TypeError:
        raise ValueError(f"custom grid entries must be ints, got {list(num_steps)}") from None
    if len(grid) < 2:
        raise ValueError(f"a custom grid needs at least two entries (one step), got {grid}")
    if grid[-1] != 0:
        raise ValueError(f"custom grid must end at 0, got last entry {grid[-1]}")
    if grid[0] > T - 1:
        raise ValueError(f"custom grid must start at <= T-1 = {T - 1} (t = T is singular), got {grid[0]}")
    if any(x <= y for x, y in zip(grid, grid[1:])):
        raise ValueError(f"custom grid must be strictly decreasing, got {grid}")
    return grid
