"""Plain fine-tuning on the true answers: not an unlearning method (not in METHODS), but what the
relearning attack (robustness/attacks.py) trains with, through the same adapter training."""

from .base import StepBatches, UnlearningMethod, answer_logprobs


class FineTuning(UnlearningMethod):
    name = "finetune"
    description = "minimise CE of the true answers of the forget rows (relearning them)"

    def loss(self, model, batches: StepBatches):
        nll = answer_logprobs(model, batches.forget).mean_nll
        return nll, {"nll": nll.item()}
