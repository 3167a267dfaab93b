"""Every exercise's check against answers a student could hand in: known-wrong variants (each must
fail with an ``AssertionError("Hint: ...")``) and known-right variants written differently from
the notebook's solution (``math.sqrt`` or ``**0.5``, the library's own helper, float32 where the
text allows it, an index assignment instead of ``torch.where``, ...), which must pass.

The variants are plain functions with the notebook's signatures; the checks are called directly
(no notebook runs), so the whole file takes seconds. ``python tests/test_exercise_variants.py``
prints the table exercise → wrong variants rejected / right variants accepted.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from safescore import predict_x0
from safescore.core import SafeGuidance
from safescore.core.density import DecodedDensity, grad_log_prob
from safescore.course import checks


# --------------------------------------------------------------------------- 1.1 gmm_score
def gmm_score_solution(x, means, variances, weights):
    diff = x[:, None, :] - means[None]
    d = x.shape[1]
    log_terms = (
        torch.log(weights)
        - 0.5 * (diff**2).sum(-1) / variances
        - 0.5 * d * torch.log(2 * math.pi * variances)
    )
    r = torch.softmax(log_terms, dim=-1)
    return -(r[..., None] * diff / variances[None, :, None]).sum(1)


def gmm_score_logsumexp(x, means, variances, weights):
    d = x.shape[1]
    sq = ((x[:, None, :] - means[None]) ** 2).sum(-1)
    log_terms = weights.log() - sq / (2 * variances) - d / 2 * (2 * math.pi * variances).log()
    r = (log_terms - torch.logsumexp(log_terms, dim=1, keepdim=True)).exp()
    return (r[..., None] * (means[None] - x[:, None, :]) / variances[:, None]).sum(1)


def gmm_score_densities(x, means, variances, weights):
    """Densities instead of log terms: 0/0 far from the modes."""
    diff = x[:, None, :] - means[None]
    d = x.shape[1]
    dens = weights * torch.exp(-0.5 * (diff**2).sum(-1) / variances)
    dens = dens / (2 * math.pi * variances) ** (d / 2)
    r = dens / dens.sum(-1, keepdim=True)
    return -(r[..., None] * diff / variances[None, :, None]).sum(1)


def gmm_score_sign(x, means, variances, weights):
    return -gmm_score_solution(x, means, variances, weights)


def gmm_score_no_weights(x, means, variances, weights):
    return gmm_score_solution(x, means, variances, torch.ones_like(weights) / len(weights))


def gmm_score_sigma(x, means, variances, weights):
    diff = x[:, None, :] - means[None]
    d = x.shape[1]
    log_terms = (
        weights.log()
        - 0.5 * (diff**2).sum(-1) / variances
        - 0.5 * d * (2 * math.pi * variances).log()
    )
    r = torch.softmax(log_terms, dim=-1)
    return -(r[..., None] * diff / variances.sqrt()[None, :, None]).sum(1)


# --------------------------------------------------------------------------- 1.2 dsm_loss
def dsm_loss_solution(model, x0, t, eps, alpha_bar):
    a = alpha_bar[:, None]
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    return ((model(x_t, t) - eps) ** 2).mean()


def dsm_loss_mse(model, x0, t, eps, alpha_bar):
    a = alpha_bar.view(-1, 1)
    return F.mse_loss(model(a**0.5 * x0 + (1 - a) ** 0.5 * eps, t), eps)


def dsm_loss_sum(model, x0, t, eps, alpha_bar):
    a = alpha_bar[:, None]
    return ((model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t) - eps) ** 2).sum()


def dsm_loss_alpha(model, x0, t, eps, alpha_bar):
    a = alpha_bar[:, None]
    return ((model(a * x0 + (1 - a) * eps, t) - eps) ** 2).mean()


def dsm_loss_detached(model, x0, t, eps, alpha_bar):
    with torch.no_grad():
        return dsm_loss_solution(model, x0, t, eps, alpha_bar)


def dsm_loss_x0_target(model, x0, t, eps, alpha_bar):
    a = alpha_bar[:, None]
    return ((model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t) - x0) ** 2).mean()


# --------------------------------------------------------------------------- 1.3 langevin_step
def langevin_solution(x, score, step_size, z):
    return x + step_size * score + math.sqrt(2 * step_size) * z


def langevin_pow(x, score, step_size, z):
    return x + step_size * score + (2 * step_size) ** 0.5 * z


def langevin_torch_sqrt(x, score, step_size, z):
    return x + step_size * score + torch.sqrt(torch.tensor(2.0 * step_size, dtype=x.dtype)) * z


def langevin_sqrt_alpha(x, score, step_size, z):
    return x + step_size * score + math.sqrt(step_size) * z


def langevin_descent(x, score, step_size, z):
    return x - step_size * score + math.sqrt(2 * step_size) * z


def langevin_no_noise(x, score, step_size, z):
    return x + step_size * score


# --------------------------------------------------------------------------- 2.1 tweedie_x0
def tweedie_math_sqrt(x_t, eps, alpha_bar):
    return (x_t - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)


def tweedie_pow(x_t, eps, alpha_bar):
    return (x_t - (1 - alpha_bar) ** 0.5 * eps) / alpha_bar**0.5


def tweedie_library(x_t, eps, alpha_bar):
    return predict_x0(x_t, eps, alpha_bar)


def tweedie_split(x_t, eps, alpha_bar):
    return x_t / math.sqrt(alpha_bar) - math.sqrt((1 - alpha_bar) / alpha_bar) * eps


def tweedie_alpha(x_t, eps, alpha_bar):
    return (x_t - math.sqrt(1 - alpha_bar) * eps) / alpha_bar


def tweedie_plus(x_t, eps, alpha_bar):
    return (x_t + math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)


# --------------------------------------------------------------------------- 2.2 ddim_update
def ddim_update_solution(x0_hat, eps, a_t, a_prev, eta, z):
    sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(1 - a_t / a_prev)
    return math.sqrt(a_prev) * x0_hat + math.sqrt(1 - a_prev - sigma**2) * eps + sigma * z


def ddim_update_pow(x0_hat, eps, a_t, a_prev, eta, z):
    var = eta**2 * (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    return a_prev**0.5 * x0_hat + (1 - a_prev - var) ** 0.5 * eps + var**0.5 * z


def ddim_update_no_noise(x0_hat, eps, a_t, a_prev, eta, z):
    sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(1 - a_t / a_prev)
    return math.sqrt(a_prev) * x0_hat + math.sqrt(1 - a_prev - sigma**2) * eps


def ddim_update_sigma_squared(x0_hat, eps, a_t, a_prev, eta, z):
    sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(1 - a_t / a_prev)
    return math.sqrt(a_prev) * x0_hat + math.sqrt(1 - a_prev - sigma**2) * eps + sigma**2 * z


def ddim_update_full_direction(x0_hat, eps, a_t, a_prev, eta, z):
    sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(1 - a_t / a_prev)
    return math.sqrt(a_prev) * x0_hat + math.sqrt(1 - a_prev) * eps + sigma * z


# --------------------------------------------------------------------------- 2.3 my_ddim
def _ddim_scaffold(step, last=-1, early=False):
    """The notebook's scaffold with ``step(eps_model, x, t, a, a_next) -> x`` as its body."""

    def my_ddim(eps_model, schedule, x_T, num_steps):
        ts = schedule.ddim_timesteps(num_steps).tolist()
        x = x_T
        pairs = list(zip(ts, ts[1:] + [last]))
        for t, t_next in pairs[:-1] if early else pairs:
            a, a_next = (torch.tensor(schedule.alpha_bar(s), dtype=x.dtype) for s in (t, t_next))
            x = step(eps_model, x, t, a, a_next)
        return x

    return my_ddim


def _step_scaffold(eps_model, x, t, a, a_next):
    eps = eps_model(x, t)
    x0_hat = (x - (1 - a) ** 0.5 * eps) / a**0.5
    return a_next**0.5 * x0_hat + (1 - a_next) ** 0.5 * eps


def _step_math_sqrt(eps_model, x, t, a, a_next):
    a, a_next = float(a), float(a_next)
    eps = eps_model(x, t)
    x0_hat = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
    return math.sqrt(a_next) * x0_hat + math.sqrt(1 - a_next) * eps


def _step_library(eps_model, x, t, a, a_next):
    eps = eps_model(x, t)
    return a_next.sqrt() * predict_x0(x, eps, a) + (1 - a_next).sqrt() * eps


def _step_split(eps_model, x, t, a, a_next):
    eps = eps_model(x, t)
    x0_hat = x / a.sqrt() - ((1 - a) / a).sqrt() * eps
    return a_next.sqrt() * x0_hat + (1 - a_next).sqrt() * eps


def _step_returns_x0(eps_model, x, t, a, a_next):
    eps = eps_model(x, t)
    x0_hat = (x - (1 - a) ** 0.5 * eps) / a**0.5
    return x0_hat if a_next == 1 else a_next**0.5 * x0_hat + (1 - a_next) ** 0.5 * eps


def _step_alpha(eps_model, x, t, a, a_next):
    eps = eps_model(x, t)
    x0_hat = (x - (1 - a) * eps) / a
    return a_next * x0_hat + (1 - a_next) * eps


my_ddim_scaffold = _ddim_scaffold(_step_scaffold)
my_ddim_math_sqrt = _ddim_scaffold(_step_math_sqrt)
my_ddim_library = _ddim_scaffold(_step_library)
my_ddim_split = _ddim_scaffold(_step_split)
my_ddim_early_stop = _ddim_scaffold(_step_scaffold, early=True)
my_ddim_ends_at_0 = _ddim_scaffold(_step_scaffold, last=0)
my_ddim_alpha = _ddim_scaffold(_step_alpha)


# --------------------------------------------------------------------------- 3.1 classifier eps
def classifier_eps_solution(eps, grad_log_p_y, alpha_bar, scale):
    return eps - scale * math.sqrt(1 - alpha_bar) * grad_log_p_y


def classifier_eps_pow(eps, grad_log_p_y, alpha_bar, scale):
    return eps - (1 - alpha_bar) ** 0.5 * (scale * grad_log_p_y)


def classifier_eps_sign(eps, grad_log_p_y, alpha_bar, scale):
    return eps + scale * math.sqrt(1 - alpha_bar) * grad_log_p_y


def classifier_eps_sqrt_alpha(eps, grad_log_p_y, alpha_bar, scale):
    return eps - scale * math.sqrt(alpha_bar) * grad_log_p_y


# --------------------------------------------------------------------------- 3.2 negative eps
def negative_eps_solution(eps_model, x_t, t, alpha_bar, density, gamma):
    x = x_t.detach().requires_grad_(True)
    eps = eps_model(x, t)
    x0_hat = (x - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)
    (grad,) = torch.autograd.grad(density.log_prob(x0_hat).sum(), x)
    return eps.detach() + gamma * math.sqrt(1 - alpha_bar) * grad


def negative_eps_library(eps_model, x_t, t, alpha_bar, density, gamma):
    x = x_t.clone().requires_grad_()
    with torch.enable_grad():
        eps = eps_model(x, t)
        density.log_prob(predict_x0(x, eps, alpha_bar)).sum().backward()
    return (eps + gamma * (1 - alpha_bar) ** 0.5 * x.grad).detach()


def negative_eps_wrt_x0(eps_model, x_t, t, alpha_bar, density, gamma):
    eps = eps_model(x_t, t).detach()
    x0 = ((x_t - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)).requires_grad_(True)
    (grad,) = torch.autograd.grad(density.log_prob(x0).sum(), x0)
    return eps + gamma * math.sqrt(1 - alpha_bar) * grad


def negative_eps_sign(eps_model, x_t, t, alpha_bar, density, gamma):
    return 2 * eps_model(x_t, t).detach() - negative_eps_solution(
        eps_model, x_t, t, alpha_bar, density, gamma
    )


def negative_eps_keeps_graph(eps_model, x_t, t, alpha_bar, density, gamma):
    x = x_t.detach().requires_grad_(True)
    eps = eps_model(x, t)
    x0_hat = (x - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)
    (grad,) = torch.autograd.grad(density.log_prob(x0_hat).sum(), x, retain_graph=True)
    return eps + gamma * math.sqrt(1 - alpha_bar) * grad


# --------------------------------------------------------------------------- 3.3 cdtc_step
def cdtc_solution(x0_hat, density, gamma, threshold):
    mask = density.prob(x0_hat) >= threshold
    leaf = x0_hat.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(density.log_prob(leaf).sum(), leaf)
    return torch.where(mask[:, None], x0_hat - gamma * grad, x0_hat), mask


def cdtc_index_assign(x0_hat, density, gamma, threshold):
    mask = density.prob(x0_hat) >= threshold
    new = x0_hat.clone()
    new[mask] = x0_hat[mask] - gamma * grad_log_prob(density, x0_hat)[mask]
    return new, mask


def cdtc_strict(x0_hat, density, gamma, threshold):
    mask = density.prob(x0_hat) > threshold
    leaf = x0_hat.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(density.log_prob(leaf).sum(), leaf)
    return torch.where(mask[:, None], x0_hat - gamma * grad, x0_hat), mask


def cdtc_no_mask(x0_hat, density, gamma, threshold):
    mask = density.prob(x0_hat) >= threshold
    return x0_hat - gamma * grad_log_prob(density, x0_hat), mask


def cdtc_sign(x0_hat, density, gamma, threshold):
    return cdtc_solution(x0_hat, density, -gamma, threshold)


# --------------------------------------------------------------------------- 4.1 safe_ddim
def _safe_scaffold(correct, recompute_eps=False, sqrt=lambda v: v**0.5):
    """The notebook's scaffold; ``correct(x0_hat, density, gamma, threshold) -> x0_new``."""

    def safe_ddim(eps_model, schedule, x_T, num_steps, density, gamma, threshold):
        ts = schedule.ddim_timesteps(num_steps).tolist()
        x = x_T
        for t, t_next in zip(ts, ts[1:] + [-1]):
            a, a_next = (torch.tensor(schedule.alpha_bar(s), dtype=x.dtype) for s in (t, t_next))
            if sqrt is math.sqrt:
                a, a_next = float(a), float(a_next)
            eps = eps_model(x, t)
            x0_hat = (x - sqrt(1 - a) * eps) / sqrt(a)
            x0_new = correct(x0_hat, density, gamma, threshold)
            if recompute_eps:
                eps = (x - sqrt(a) * x0_new) / sqrt(1 - a)
            x = sqrt(a_next) * x0_new + sqrt(1 - a_next) * eps
        return x

    return safe_ddim


def _first(fn):
    return lambda *args: fn(*args)[0]


def _library_correct(x0_hat, density, gamma, threshold):
    return SafeGuidance(density, gamma, threshold).correct(x0_hat).x0_hat


safe_ddim_scaffold = _safe_scaffold(_first(cdtc_solution))
safe_ddim_math_sqrt = _safe_scaffold(_first(cdtc_index_assign), sqrt=math.sqrt)
safe_ddim_library = _safe_scaffold(_library_correct)
safe_ddim_recomputed_eps = _safe_scaffold(_first(cdtc_solution), recompute_eps=True)
safe_ddim_no_mask = _safe_scaffold(_first(cdtc_no_mask))
safe_ddim_sign = _safe_scaffold(_first(cdtc_sign))

for _name, _fn in list(globals().items()):  # the factories' variants are named as their variable
    if _name.startswith(("my_ddim_", "safe_ddim_")):
        _fn.__name__ = _name


# --------------------------------------------------------------------------- 4.2 choose_setting
def choose_solution(settings, harm, dist, max_harm):
    ok = [i for i in range(len(settings)) if harm[i] <= max_harm]
    if not ok:
        return None
    return settings[min(ok, key=lambda i: dist[i])]


def choose_loop(settings, harm, dist, max_harm):
    best = None
    for s, h, d in zip(settings, harm, dist):
        if h <= max_harm and (best is None or d < best[1]):
            best = (s, d)
    return None if best is None else best[0]


def choose_sorted(settings, harm, dist, max_harm):
    ranked = sorted((d, i) for i, (h, d) in enumerate(zip(harm, dist)) if h <= max_harm)
    return settings[ranked[0][1]] if ranked else None


def choose_last_on_tie(settings, harm, dist, max_harm):
    best = None
    for s, h, d in zip(settings, harm, dist):
        if h <= max_harm and (best is None or d <= best[1]):
            best = (s, d)
    return None if best is None else best[0]


def choose_strict(settings, harm, dist, max_harm):
    ok = [i for i in range(len(settings)) if harm[i] < max_harm]
    return settings[min(ok, key=lambda i: dist[i])] if ok else None


def choose_least_harm(settings, harm, dist, max_harm):
    ok = [i for i in range(len(settings)) if harm[i] <= max_harm]
    return settings[min(ok, key=lambda i: harm[i])] if ok else None


# --------------------------------------------------------------------------- 4.3 harmful_rate_ci
def _bootstrap(flags, n_boot, generator, q=(0.025, 0.975), dtype=torch.float64, n=None):
    x = flags.to(dtype)
    idx = torch.randint(0, len(x), (n_boot, n or len(x)), generator=generator)
    means = x[idx].mean(1)
    lo, hi = torch.quantile(means, torch.tensor(q, dtype=dtype))
    return float(x.mean()), float(lo), float(hi)


def rate_ci_solution(flags, n_boot, generator):
    return _bootstrap(flags, n_boot, generator)


def rate_ci_float32(flags, n_boot, generator):
    return _bootstrap(flags, n_boot, generator, dtype=torch.float32)


def rate_ci_numpy(flags, n_boot, generator):
    rng = np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=generator)))
    x = flags.numpy().astype(np.float64)
    means = rng.choice(x, size=(n_boot, len(x)), replace=True).mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return x.mean(), lo, hi


def rate_ci_90(flags, n_boot, generator):
    return _bootstrap(flags, n_boot, generator, q=(0.05, 0.95))


def rate_ci_99(flags, n_boot, generator):
    return _bootstrap(flags, n_boot, generator, q=(0.005, 0.995))


def rate_ci_n_boot_draws(flags, n_boot, generator):
    return _bootstrap(flags, n_boot, generator, n=n_boot)


def rate_ci_percent(flags, n_boot, generator):
    return tuple(100 * v for v in _bootstrap(flags, n_boot, generator))


# --------------------------------------------------------------------------- 5.1 off_manifold
def off_manifold_solution(x, U):
    return (x - (x @ U) @ U.T).norm(dim=-1)


def off_manifold_linalg(x, U):
    return torch.linalg.vector_norm(x - x @ U @ U.T, dim=1)


def off_manifold_pythagoras(x, U):
    return ((x**2).sum(-1) - ((x @ U) ** 2).sum(-1)).sqrt()


def off_manifold_projection_norm(x, U):
    return (x @ U @ U.T).norm(dim=-1)


def off_manifold_squared(x, U):
    return ((x - x @ U @ U.T) ** 2).sum(-1)


# --------------------------------------------------------------------------- 5.2 latent_cdtc_step
def latent_cdtc_solution(x0_hat, density, gamma, threshold, encoder, decoder):
    mask = density.prob(x0_hat) >= threshold
    z = encoder(x0_hat).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(density.log_prob(decoder(z)).sum(), z)
    with torch.no_grad():
        x_new = decoder(z - gamma * grad)
    return torch.where(mask[:, None], x_new, x0_hat)


def latent_cdtc_library(x0_hat, density, gamma, threshold, encoder, decoder):
    mask = density.prob(x0_hat) >= threshold
    z = encoder(x0_hat[mask])
    new = x0_hat.clone()
    new[mask] = decoder(z - gamma * grad_log_prob(DecodedDensity(density, decoder), z)).detach()
    return new


def latent_cdtc_ambient(x0_hat, density, gamma, threshold, encoder, decoder):
    mask = density.prob(x0_hat) >= threshold
    return torch.where(mask[:, None], x0_hat - gamma * grad_log_prob(density, x0_hat), x0_hat)


def latent_cdtc_ambient_then_encoded(x0_hat, density, gamma, threshold, encoder, decoder):
    mask = density.prob(x0_hat) >= threshold
    z = encoder(x0_hat - gamma * grad_log_prob(density, x0_hat))
    return torch.where(mask[:, None], decoder(z).detach(), x0_hat)


def latent_cdtc_no_mask(x0_hat, density, gamma, threshold, encoder, decoder):
    return latent_cdtc_solution(x0_hat, density, gamma, -math.inf, encoder, decoder)


def latent_cdtc_all_through_ae(x0_hat, density, gamma, threshold, encoder, decoder):
    mask = density.prob(x0_hat) >= threshold
    z = encoder(x0_hat).detach()
    g = grad_log_prob(DecodedDensity(density, decoder), z)
    return decoder(z - gamma * g * mask[:, None]).detach()


# --------------------------------------------------------------------------- 5.3 log_odds
def log_odds_solution(logits, c):
    others = torch.cat([logits[:, :c], logits[:, c + 1 :]], dim=1)
    return logits[:, c] - torch.logsumexp(others, dim=-1)


def log_odds_masked(logits, c):
    mask = torch.zeros(logits.shape[1], dtype=torch.bool)
    mask[c] = True
    return logits[:, c] - torch.logsumexp(logits.masked_fill(mask, -math.inf), dim=-1)


def log_odds_index_list(logits, c):
    others = [j for j in range(logits.shape[1]) if j != c]
    return logits[:, c] - logits[:, others].logsumexp(dim=1)


def log_odds_naive(logits, c):
    p = torch.softmax(logits, dim=-1)[:, c]
    return torch.log(p / (1 - p))


def log_odds_log_softmax(logits, c):
    return torch.log_softmax(logits, dim=-1)[:, c]


def log_odds_max(logits, c):
    others = torch.cat([logits[:, :c], logits[:, c + 1 :]], dim=1)
    return logits[:, c] - others.max(-1).values


# --------------------------------------------------------------------------- 6.1 info_nce
def info_nce_solution(image_embeds, text_embeds, temperature):
    logits = F.normalize(image_embeds, dim=-1) @ F.normalize(text_embeds, dim=-1).T / temperature
    labels = torch.arange(len(logits))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def info_nce_manual(image_embeds, text_embeds, temperature):
    cos = F.cosine_similarity(image_embeds[:, None], text_embeds[None], dim=-1)
    logits = cos / temperature
    rows = -torch.log_softmax(logits, dim=1).diagonal().mean()
    cols = -torch.log_softmax(logits, dim=0).diagonal().mean()
    return 0.5 * (rows + cols)


def info_nce_one_way(image_embeds, text_embeds, temperature):
    logits = F.normalize(image_embeds, dim=-1) @ F.normalize(text_embeds, dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(logits)))


def info_nce_unnormalised(image_embeds, text_embeds, temperature):
    logits = image_embeds @ text_embeds.T / temperature
    labels = torch.arange(len(logits))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def info_nce_times_tau(image_embeds, text_embeds, temperature):
    return info_nce_solution(image_embeds, text_embeds, 1 / temperature)


# --------------------------------------------------------------------------- 6.2 clip_cosine
def clip_cosine_solution(image_embeds, text_embeds):
    return F.normalize(image_embeds, dim=-1) @ F.normalize(text_embeds, dim=-1).T


def clip_cosine_broadcast(image_embeds, text_embeds):
    return F.cosine_similarity(image_embeds[:, None, :], text_embeds[None, :, :], dim=-1)


def clip_cosine_norms(image_embeds, text_embeds):
    dots = image_embeds @ text_embeds.T
    return dots / image_embeds.norm(dim=1)[:, None] / text_embeds.norm(dim=1)[None, :]


def clip_cosine_raw(image_embeds, text_embeds):
    return image_embeds @ text_embeds.T


def clip_cosine_image_only(image_embeds, text_embeds):
    return F.normalize(image_embeds, dim=-1) @ text_embeds.T


def clip_cosine_dim0(image_embeds, text_embeds):
    return F.normalize(image_embeds, dim=0) @ F.normalize(text_embeds, dim=0).T


# --------------------------------------------------------------------------- 6.3 topk_log_prob
def topk_solution(sims, k, reduction, eps=1e-6):
    top = sims.topk(k, dim=-1).values
    if reduction == "topk":
        return top.mean(dim=-1).clamp(min=eps).log()
    return top.clamp(min=eps).log().sum(dim=-1)


def topk_sorted(sims, k, reduction, eps=1e-6):
    top = sims.sort(dim=-1, descending=True).values[:, :k]
    floor = torch.tensor(eps, dtype=sims.dtype)
    if reduction == "sum_log_topk":
        return torch.log(torch.maximum(top, floor)).sum(-1)
    return torch.log(torch.maximum(top.sum(-1) / k, floor))


def topk_no_clamp(sims, k, reduction, eps=1e-6):
    top = sims.topk(k, dim=-1).values
    if reduction == "topk":
        return top.mean(dim=-1).log()
    return top.log().sum(dim=-1)


def topk_clamp_each_before_mean(sims, k, reduction, eps=1e-6):
    top = sims.topk(k, dim=-1).values.clamp(min=eps)
    if reduction == "topk":
        return top.mean(dim=-1).log()
    return top.log().sum(dim=-1)


def topk_swapped(sims, k, reduction, eps=1e-6):
    return topk_solution(sims, k, "topk" if reduction == "sum_log_topk" else "sum_log_topk", eps)


def topk_smallest(sims, k, reduction, eps=1e-6):
    return topk_solution(-(-sims).topk(k, dim=-1).values, k, reduction, eps)


# --------------------------------------------------------------------------- 7.1 cfg_eps
def cfg_solution(eps_uncond, eps_text, w):
    return eps_uncond + w * (eps_text - eps_uncond)


def cfg_affine(eps_uncond, eps_text, w):
    return (1 - w) * eps_uncond + w * eps_text


def cfg_lerp(eps_uncond, eps_text, w):
    return torch.lerp(eps_uncond, eps_text, w)


def cfg_swapped(eps_uncond, eps_text, w):
    return eps_text + w * (eps_uncond - eps_text)


def cfg_mean(eps_uncond, eps_text, w):
    return (eps_uncond + eps_text) / 2


# --------------------------------------------------------------------------- 7.2 latent_x0_step
def latent_x0_solution(z0_hat, decoder, density, gamma, threshold, scaling_factor):
    z = z0_hat.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(density.log_prob(decoder(z / scaling_factor)).sum(), z)
    with torch.no_grad():
        mask = density.prob(decoder(z0_hat / scaling_factor)) >= threshold
    new = torch.where(mask[:, None, None, None], z0_hat - gamma * grad, z0_hat)
    return new.detach()


def latent_x0_index_assign(z0_hat, decoder, density, gamma, threshold, scaling_factor):
    with torch.no_grad():
        mask = density.prob(decoder(z0_hat / scaling_factor)) >= threshold
    z = z0_hat[mask].clone().requires_grad_()
    density.log_prob(decoder(z / scaling_factor)).sum().backward()
    new = z0_hat.clone()
    new[mask] = (z - gamma * z.grad).detach()
    return new


def latent_x0_no_scale(z0_hat, decoder, density, gamma, threshold, scaling_factor):
    return latent_x0_solution(z0_hat, decoder, density, gamma, threshold, 1.0)


def latent_x0_strict(z0_hat, decoder, density, gamma, threshold, scaling_factor):
    z = z0_hat.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(density.log_prob(decoder(z / scaling_factor)).sum(), z)
    with torch.no_grad():
        mask = density.prob(decoder(z0_hat / scaling_factor)) > threshold
    return torch.where(mask[:, None, None, None], z0_hat - gamma * grad, z0_hat).detach()


def latent_x0_no_mask(z0_hat, decoder, density, gamma, threshold, scaling_factor):
    return latent_x0_solution(z0_hat, decoder, density, gamma, -math.inf, scaling_factor)


# --------------------------------------------------------------------------- 8.1 i2p_inappropriate
def i2p_solution(nudenet_any, q16_prob):
    return nudenet_any | (q16_prob > 0.5)


def i2p_at_least_half(nudenet_any, q16_prob):
    return nudenet_any | (q16_prob >= 0.5)


def i2p_logical_or(nudenet_any, q16_prob):
    return torch.logical_or(nudenet_any, q16_prob > 0.5)


def i2p_and(nudenet_any, q16_prob):
    return nudenet_any & (q16_prob > 0.5)


def i2p_nudenet_only(nudenet_any, q16_prob):
    return nudenet_any.clone()


def i2p_box_threshold(nudenet_any, q16_prob):
    return nudenet_any | (q16_prob >= 0.2)


# --------------------------------------------------------------------------- 8.2 prompt bootstrap
def _prompt_bootstrap(flags, n_boot, generator, q=(0.025, 0.975), dtype=torch.float64):
    P = flags.shape[0]
    idx = torch.randint(0, P, (n_boot, P), generator=generator)
    means = flags.to(dtype)[idx].mean(dim=(1, 2))
    lo, hi = torch.quantile(means, torch.tensor(q, dtype=dtype))
    return float(flags.to(dtype).mean()), float(lo), float(hi)


def prompt_ci_solution(flags, n_boot, generator):
    return _prompt_bootstrap(flags, n_boot, generator)


def prompt_ci_float32(flags, n_boot, generator):
    return _prompt_bootstrap(flags, n_boot, generator, dtype=torch.float32)


def prompt_ci_per_prompt_means(flags, n_boot, generator):
    rng = np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=generator)))
    per_prompt = flags.double().mean(1).numpy()
    means = rng.choice(per_prompt, size=(n_boot, len(per_prompt)), replace=True).mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(per_prompt.mean()), lo, hi


def prompt_ci_images(flags, n_boot, generator):
    return _bootstrap(flags.flatten(), n_boot, generator)


def prompt_ci_90(flags, n_boot, generator):
    return _prompt_bootstrap(flags, n_boot, generator, q=(0.05, 0.95))


def prompt_ci_percent(flags, n_boot, generator):
    return tuple(100 * v for v in _prompt_bootstrap(flags, n_boot, generator))


# --------------------------------------------------------------------------- the table
EXERCISES = {
    "1.1": (
        checks.check_gmm_score,
        [gmm_score_solution, gmm_score_logsumexp],
        [gmm_score_densities, gmm_score_sign, gmm_score_no_weights, gmm_score_sigma],
    ),
    "1.2": (
        checks.check_dsm_loss,
        [dsm_loss_solution, dsm_loss_mse],
        [dsm_loss_sum, dsm_loss_alpha, dsm_loss_detached, dsm_loss_x0_target],
    ),
    "1.3": (
        checks.check_langevin_step,
        [langevin_solution, langevin_pow, langevin_torch_sqrt],
        [langevin_sqrt_alpha, langevin_descent, langevin_no_noise],
    ),
    "2.1": (
        checks.check_tweedie,
        [tweedie_math_sqrt, tweedie_pow, tweedie_library, tweedie_split],
        [tweedie_alpha, tweedie_plus],
    ),
    "2.2": (
        checks.check_ddim_step,
        [ddim_update_solution, ddim_update_pow],
        [ddim_update_no_noise, ddim_update_sigma_squared, ddim_update_full_direction],
    ),
    "2.3": (
        checks.check_ddim_loop,
        [my_ddim_scaffold, my_ddim_math_sqrt, my_ddim_library, my_ddim_split],
        [my_ddim_early_stop, my_ddim_ends_at_0, my_ddim_alpha],
    ),
    "3.1": (
        checks.check_classifier_guided_eps,
        [classifier_eps_solution, classifier_eps_pow],
        [classifier_eps_sign, classifier_eps_sqrt_alpha],
    ),
    "3.2": (
        checks.check_negative_guidance_eps,
        [negative_eps_solution, negative_eps_library],
        [negative_eps_wrt_x0, negative_eps_sign, negative_eps_keeps_graph],
    ),
    "3.3": (
        checks.check_cdtc_step,
        [cdtc_solution, cdtc_index_assign],
        [cdtc_strict, cdtc_no_mask, cdtc_sign],
    ),
    "4.1": (
        checks.check_safe_ddim_loop,
        [safe_ddim_scaffold, safe_ddim_math_sqrt, safe_ddim_library],
        [safe_ddim_recomputed_eps, safe_ddim_no_mask, safe_ddim_sign],
    ),
    "4.2": (
        checks.check_choose_setting,
        [choose_solution, choose_loop, choose_sorted],
        [choose_last_on_tie, choose_strict, choose_least_harm],
    ),
    "4.3": (
        checks.check_harm_rate_ci,
        [rate_ci_solution, rate_ci_float32, rate_ci_numpy],
        [rate_ci_90, rate_ci_99, rate_ci_n_boot_draws, rate_ci_percent],
    ),
    "5.1": (
        checks.check_off_manifold_distance,
        [off_manifold_solution, off_manifold_linalg, off_manifold_pythagoras],
        [off_manifold_projection_norm, off_manifold_squared],
    ),
    "5.2": (
        checks.check_latent_cdtc_step,
        [latent_cdtc_solution, latent_cdtc_library],
        [
            latent_cdtc_ambient,
            latent_cdtc_ambient_then_encoded,
            latent_cdtc_no_mask,
            latent_cdtc_all_through_ae,
        ],
    ),
    "5.3": (
        checks.check_log_odds,
        [log_odds_solution, log_odds_masked, log_odds_index_list],
        [log_odds_naive, log_odds_log_softmax, log_odds_max],
    ),
    "6.1": (
        checks.check_info_nce,
        [info_nce_solution, info_nce_manual],
        [info_nce_one_way, info_nce_unnormalised, info_nce_times_tau],
    ),
    "6.2": (
        checks.check_clip_cosine,
        [clip_cosine_solution, clip_cosine_broadcast, clip_cosine_norms],
        [clip_cosine_raw, clip_cosine_image_only, clip_cosine_dim0],
    ),
    "6.3": (
        checks.check_topk_log_prob,
        [topk_solution, topk_sorted],
        [topk_no_clamp, topk_clamp_each_before_mean, topk_swapped, topk_smallest],
    ),
    "7.1": (
        checks.check_cfg_eps,
        [cfg_solution, cfg_affine, cfg_lerp],
        [cfg_swapped, cfg_mean],
    ),
    "7.2": (
        checks.check_latent_x0_step,
        [latent_x0_solution, latent_x0_index_assign],
        [latent_x0_no_scale, latent_x0_strict, latent_x0_no_mask],
    ),
    "8.1": (
        checks.check_i2p_inappropriate,
        [i2p_solution, i2p_at_least_half, i2p_logical_or],
        [i2p_and, i2p_nudenet_only, i2p_box_threshold],
    ),
    "8.2": (
        checks.check_prompt_bootstrap_ci,
        [prompt_ci_solution, prompt_ci_float32, prompt_ci_per_prompt_means],
        [prompt_ci_images, prompt_ci_90, prompt_ci_percent],
    ),
}

# The hint a wrong answer must get (a part of it), where the issue named the mistake.
EXPECTED_HINTS = {
    "gmm_score_densities": "underflows",
    "cdtc_strict": "not >",
    "choose_last_on_tie": "FIRST",
    "rate_ci_90": "90 %",
    "latent_cdtc_ambient_then_encoded": "encoded the result",
    "topk_no_clamp": "clamp",
    "log_odds_naive": "overflows",
    "prompt_ci_90": "90 %",
    "prompt_ci_images": "resampled single images",
}

CASES = [
    (exercise, kind, fn)
    for exercise, (_, right, wrong) in EXERCISES.items()
    for kind, fns in (("right", right), ("wrong", wrong))
    for fn in fns
]


def test_every_exercise_has_two_wrong_and_two_right_variants_and_every_check_is_listed():
    assert len(EXERCISES) == 22
    assert {check.__name__ for check, _, _ in EXERCISES.values()} == set(checks.__all__)
    for exercise, (_, right, wrong) in EXERCISES.items():
        assert len(right) >= 2 and len(wrong) >= 2, exercise


@pytest.mark.parametrize(
    "exercise, kind, fn", CASES, ids=[f"{e}-{k}-{f.__name__}" for e, k, f in CASES]
)
def test_variant(exercise, kind, fn, capsys):
    check = EXERCISES[exercise][0]
    if kind == "wrong":
        with pytest.raises(AssertionError, match=r"^Hint: ") as err:
            check(fn)
        assert EXPECTED_HINTS.get(fn.__name__, "Hint: ") in str(err.value)
    else:
        check(fn)
        assert capsys.readouterr().out.startswith("✓ ")


def verdicts() -> dict[str, tuple[int, int, int, int, list[str]]]:
    """exercise -> (wrong rejected, wrong total, right accepted, right total, misjudged names)."""
    import contextlib
    import io

    table = {}
    for exercise, (check, right, wrong) in EXERCISES.items():
        rejected, accepted, misjudged = 0, 0, []
        for kind, fns in (("wrong", wrong), ("right", right)):
            for fn in fns:
                with contextlib.redirect_stdout(io.StringIO()):
                    try:
                        check(fn)
                        outcome = "pass"
                    except AssertionError as err:
                        outcome = "hint" if str(err).startswith("Hint: ") else "other"
                    except Exception:  # noqa: BLE001 - a crashing check misjudges the variant
                        outcome = "other"
                if kind == "wrong":
                    rejected += outcome == "hint"
                    judged_right = outcome == "hint"
                else:
                    accepted += outcome == "pass"
                    judged_right = outcome == "pass"
                if not judged_right:
                    misjudged.append(fn.__name__)
        table[exercise] = (rejected, len(wrong), accepted, len(right), misjudged)
    return table


if __name__ == "__main__":
    rows = verdicts()
    print("| exercise | wrong rejected | right accepted | misjudged |")
    print("|---|---|---|---|")
    for exercise, (rej, nw, acc, nr, bad) in rows.items():
        print(f"| {exercise} | {rej}/{nw} | {acc}/{nr} | {', '.join(bad) or '—'} |")
    total = [sum(r[i] for r in rows.values()) for i in range(4)]
    print(f"| all | {total[0]}/{total[1]} | {total[2]}/{total[3]} | |")
