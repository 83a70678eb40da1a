"""GA — gradient ascent on the forget set: push the true answers' likelihood down."""

from .base import StepBatches, UnlearningMethod, answer_logprobs


class GradientAscent(UnlearningMethod):
    name = "ga"
    description = "minimise -CE on forget answers"
    # Its budget, chosen by scripts/choose_budgets.py (the ladder's numbers: README, "The budget").
    lr = 8.5e-4

    def loss(self, model, batches: StepBatches):
        forget_nll = answer_logprobs(model, batches.forget).mean_nll
        return -forget_nll, {"forget_nll": forget_nll.item()}
