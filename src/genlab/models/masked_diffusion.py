"""The objectives of a masked (absorbing-state) language model, as pure tensor functions.

MDLM (Sahoo et al. 2024, "Simple and Effective Masked Diffusion Language Models"): at time t in (0, 1] each token
of x0 has been replaced by [MASK] with probability `mask_rate(t)`; the net sees x_t and predicts x0 under the SUBS
parameterization (it never predicts [MASK], and a token that is not masked is copied through). The continuous-time
negative ELBO is

    -log p(x0) <= E_t [ w(t) * sum over masked positions i of -log p_theta(x0_i | x_t) ]

with w(t) = -alpha'(t) / (1 - alpha(t)) and alpha(t) = 1 - mask_rate(t) the chance a token is still itself. The
log-linear schedule (MDLM's default) has mask_rate(t) = (1 - eps) t, so w(t) = 1 / t. Its mean over the tokens is
in nats per token, the GPT's unit.

BERT (Devlin et al. 2019): `mask_rate` of the tokens are chosen, 80% of them replaced by [MASK], 10% by a random
token, 10% kept, and the net predicts the chosen ones: a training signal, not a likelihood.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: The smallest t drawn (MDLM's sampling_eps): w(t) = 1 / t stays finite.
MIN_TIME = 1e-3


@dataclass(frozen=True)
class LogLinearSchedule:
    """mask_rate(t) = (1 - eps) t: at t = 1 all but a fraction eps of the tokens are masked (MDLM's LogLinearNoise)."""

    eps: float = 1e-3

    def mask_rate(self, t: Tensor) -> Tensor:
        return (1 - self.eps) * t

    def weight(self, t: Tensor) -> Tensor:
        """-alpha'(t) / (1 - alpha(t)): the ELBO's weight on a masked token's cross-entropy at time t."""
        return 1 / t

    def reveal_chance(self, t: Tensor | float, s: Tensor | float) -> Tensor | float:
        """The chance that a token masked at time t is revealed by the earlier time s < t (the sampler's step)."""
        return (t - s) / t


def antithetic_times(n: int, generator: torch.Generator | None = None, device: torch.device | None = None) -> Tensor:
    """n times in [MIN_TIME, 1], one per stratum of [0, 1) (a shared random offset): a batch covers the whole
    interval, which lowers the variance of the ELBO estimate (MDLM's antithetic sampling)."""
    offsets = torch.arange(n, device=device) / n
    u = (torch.rand(n, generator=generator, device=device) / n + offsets) % 1
    return (1 - MIN_TIME) * u + MIN_TIME


def mask_tokens(
    x0: Tensor, rate: Tensor, mask_id: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """x_t and where it is masked: each token of x0 (B, T) masked with its row's probability `rate` (B,)."""
    masked = torch.rand(x0.shape, generator=generator, device=x0.device) < rate[:, None]
    return x0.masked_fill(masked, mask_id), masked


def subs_log_probs(logits: Tensor, xt: Tensor, mask_id: int) -> Tensor:
    """log p_theta(x0 | x_t) (B, T, V) under SUBS: the [MASK] logit is -inf (x0 is never [MASK]); a position that is
    not masked in x_t puts all its mass on its own token (log-prob 0 there, -inf elsewhere)."""
    logits = logits.float().clone()
    logits[..., mask_id] = float("-inf")
    log_probs = logits.log_softmax(dim=-1)
    revealed = torch.full_like(log_probs, float("-inf")).scatter_(-1, xt[..., None], 0.0)
    return torch.where((xt != mask_id)[..., None], revealed, log_probs)


def mdlm_nats(log_probs: Tensor, x0: Tensor, masked: Tensor, t: Tensor, schedule: LogLinearSchedule) -> Tensor:
    """Each position's term of the negative ELBO (B, T), in nats: w(t) * -log p_theta(x0_i | x_t) where masked, 0
    where revealed (SUBS copies those through). Their mean over positions estimates the bound per token."""
    nll = -log_probs.gather(-1, x0[..., None])[..., 0]
    return torch.where(masked, nll, torch.zeros_like(nll)) * schedule.weight(t)[:, None]


def bert_corruption(
    x0: Tensor, mask_id: int, vocab_size: int, rate: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """BERT's inputs and the chosen positions: each token chosen with probability `rate`; of the chosen, 80% become
    [MASK], 10% a random token of the `vocab_size` real ones, 10% stay as they are."""
    chosen = torch.rand(x0.shape, generator=generator, device=x0.device) < rate
    draw = torch.rand(x0.shape, generator=generator, device=x0.device)
    random_tokens = torch.randint(vocab_size, x0.shape, generator=generator, device=x0.device)
    inputs = torch.where(chosen & (draw < 0.8), torch.full_like(x0, mask_id), x0)
    inputs = torch.where(chosen & (draw >= 0.8) & (draw < 0.9), random_tokens, inputs)
    return inputs, chosen
