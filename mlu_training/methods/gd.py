"""GD — gradient difference: ascend on the forget set, descend on the retain set."""

from dataclasses import dataclass

from .base import StepBatches, UnlearningMethod, answer_logprobs


class GradientDifference(UnlearningMethod):
    name = "gd"
    description = "minimise -CE on forget + CE on retain"
    # Its budget (scripts/choose_budgets.py): task A's forgotten items still answered after the
    # first request on mini, by rate: 3e-4 81 %, 4.2e-4 81 %, 6e-4 81 %, 8.5e-4 48 %.
    lr = 8.5e-4
    uses_retain = True

    @dataclass(frozen=True)
    class Args:
        retain_weight: float = 1.0  # weight of the retain CE beside the forget ascent

    def loss(self, model, batches: StepBatches):
        forget_nll = answer_logprobs(model, batches.forget).mean_nll
        retain_nll = answer_logprobs(model, batches.retain).mean_nll
        return -forget_nll + self.args.retain_weight * retain_nll, {"forget_nll": forget_nll.item(), "retain_nll": retain_nll.item()}
