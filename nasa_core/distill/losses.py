"""The NASA-T objective in plain torch (no ComfyUI): everything is written in x0 units, the form every
ComfyUI model returns, with the noise parametrisation given by two per-sample numbers:

    x_t = a_t * x0 + s_t * eps        (VE models, EPS and V:  a_t = 1,      s_t = sigma)
                                      (flow models, CONST:     a_t = 1-sigma, s_t = sigma)

so eps_hat = (x_t - a_t * x0_hat) / s_t, and differences of eps predictions at the same x_t are
a_t / s_t times differences of x0 predictions (with the sign flipped).
"""
from __future__ import annotations

import torch


def _view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *([1] * (like.dim() - 1))).to(like)


def guided(cond: torch.Tensor, negative: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    """Equation 5: (1 - kappa) * pred(y-) + kappa * pred(y). Linear, so it holds for eps and x0 alike;
    with y- the empty prompt it is equation 4 (ordinary CFG)."""
    k = _view(kappa, cond)
    return (1 - k) * negative + k * cond


def vsd_eps_difference(x0_frozen: torch.Tensor, x0_lora: torch.Tensor, a_t: torch.Tensor, s_t: torch.Tensor
                       ) -> torch.Tensor:
    """eps_psi - eps_pi of equation 6 from the two teachers' x0 predictions at the same x_t."""
    return _view(a_t / s_t, x0_frozen) * (x0_lora - x0_frozen)


def vsd_weight(a_t: torch.Tensor, s_t: torch.Tensor) -> torch.Tensor:
    """w(t) of equation 6: the variance-preserving noise variance sigma_t^2 = s^2 / (a^2 + s^2), the weight
    ProlificDreamer's VSD (and SwiftBrush after it) uses."""
    return s_t ** 2 / (a_t ** 2 + s_t ** 2)


def vsd_loss(x0_student: torch.Tensor, eps_difference: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A surrogate whose gradient with respect to the student's x0 is w(t) (eps_psi - eps_pi) / numel, i.e.
    equation 6 averaged over the batch and the latent: 0.5 * mean((x0 - sg(x0 - g))^2)."""
    g = _view(weight, eps_difference) * eps_difference
    target = (x0_student - g).detach()
    return 0.5 * torch.nn.functional.mse_loss(x0_student, target)


def denoising_loss(x0_pred: torch.Tensor, x0: torch.Tensor, a_t: torch.Tensor, s_t: torch.Tensor) -> torch.Tensor:
    """The LoRA teacher's epsilon-prediction loss, mean((eps_hat - eps)^2), from its x0 prediction:
    eps_hat - eps = -(a_t / s_t) (x0_hat - x0)."""
    return torch.mean((_view(a_t / s_t, x0) * (x0_pred - x0)) ** 2)


def clamped_clip_loss(similarity: torch.Tensor, tau: float = 0.37) -> torch.Tensor:
    """SwiftBrush v2's clamped CLIP loss: push the image-text cosine similarity up until it reaches tau,
    no further (past the margin CLIP's own biases would take over)."""
    return torch.relu(tau - similarity).mean()


def clip_weight_at(step: int, total_steps: int, start: float) -> float:
    """The CLIP loss weight: ``start`` at step 0, decaying linearly to 0 at the end of training."""
    if total_steps <= 0:
        return 0.0
    return start * max(0.0, 1.0 - step / total_steps)
