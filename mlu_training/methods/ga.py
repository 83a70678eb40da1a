"""GA — gradient ascent on the forget set: push the true answers' likelihood down."""

from .base import StepBatches, UnlearningMethod, answer_logprobs


class GradientAscent(UnlearningMethod):
    name = "ga"
    description = "minimise -CE on forget answers"
    # Its budget (scripts/choose_budgets.py): task A's forgotten items still answered after the
    # first request on mini, by rate: 3e-4 81 %, 4.2e-4 81 %, 6e-4 53 %, 8.5e-4 0 %.
    lr = 8.5e-4

    def loss(self, model, batches: StepBatches):
        forget_nll = answer_logprobs(model, batches.forget).mean_nll
        return -forget_nll, {"forget_nll": forget_nll.item()}
