"""GA — gradient ascent on the forget set: push the true answers' likelihood down."""

from .base import StepBatches, UnlearningMethod, answer_logprobs


class GradientAscent(UnlearningMethod):
    name = "ga"
    description = "minimise -CE on forget answers"

    def loss(self, model, batches: StepBatches):
        forget_nll = answer_logprobs(model, batches.forget).mean_nll
        return -forget_nll, {"forget_nll": forget_nll.item()}
