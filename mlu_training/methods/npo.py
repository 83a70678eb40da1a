"""NPO — negative preference optimisation: -(2/β)·log σ(-β·(log π_θ − log π_ref)) on forget
answers; like GA at first, but it slows down once an answer is unlikely (no runaway)."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import StepBatches, UnlearningMethod, answer_logprobs


class NegativePreferenceOptimisation(UnlearningMethod):
    name = "npo"
    description = "-(2/beta) log sigmoid(-beta (log pi - log pi_ref)) on forget"
    # Its budget, chosen by scripts/choose_budgets.py (the ladder's numbers: README, "The budget").
    lr = 4.2e-4

    @dataclass(frozen=True)
    class Args:
        beta: float = 0.1  # inverse temperature: how soon the push on an unlikely answer fades

    def loss(self, model, batches: StepBatches):
        current = answer_logprobs(model, batches.forget).sequence
        reference = torch.stack(self.frozen_reference(model, batches, "forget sequence", batches.forget_rows,
                                                      lambda ref: answer_logprobs(ref, batches.forget).sequence))
        log_ratio = current - reference
        loss = -(2.0 / self.args.beta) * F.logsigmoid(-self.args.beta * log_ratio).mean()
        return loss, {"log_ratio": log_ratio.mean().item()}
