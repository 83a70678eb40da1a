"""KL — ascend on the forget set while keeping the retain answers' token distributions close to
the reference model's (KL over answer tokens only: prompt, image and padding are masked)."""

from dataclasses import dataclass

from .base import StepBatches, UnlearningMethod, answer_logprobs, masked_kl


class KLMinimisation(UnlearningMethod):
    name = "kl"
    description = "minimise -CE on forget + KL(reference ‖ current) on retain"
    # Its budget, chosen by scripts/choose_budgets.py (the ladder's numbers: README, "The budget").
    lr = 6e-4
    uses_retain = True

    @dataclass(frozen=True)
    class Args:
        retain_weight: float = 1.0  # weight of the retain KL beside the forget ascent

    def loss(self, model, batches: StepBatches):
        forget_nll = answer_logprobs(model, batches.forget).mean_nll
        current = answer_logprobs(model, batches.retain)
        reference = self.frozen_reference(model, batches, "retain distribution", batches.retain_rows,
                                          lambda ref: answer_logprobs(ref, batches.retain).answer_distributions())
        kl = masked_kl(reference, current)
        return -forget_nll + self.args.retain_weight * kl, {"forget_nll": forget_nll.item(), "retain_kl": kl.item()}
