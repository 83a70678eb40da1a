"""GD — gradient difference: ascend on the forget set, descend on the retain set."""

from dataclasses import dataclass

from .base import StepBatches, UnlearningMethod, answer_logprobs


class GradientDifference(UnlearningMethod):
    name = "gd"
    description = "minimise -CE on forget + CE on retain"
    # Its budget, chosen by scripts/choose_budgets.py (the ladder's numbers: README, "The budget").
    lr = 8.5e-4
    uses_retain = True

    @dataclass(frozen=True)
    class Args:
        retain_weight: float = 1.0  # weight of the retain CE beside the forget ascent

    def loss(self, model, batches: StepBatches):
        forget_nll = answer_logprobs(model, batches.forget).mean_nll
        retain_nll = answer_logprobs(model, batches.retain).mean_nll
        return -forget_nll + self.args.retain_weight * retain_nll, {"forget_nll": forget_nll.item(), "retain_nll": retain_nll.item()}
