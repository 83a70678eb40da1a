"""IDK — fine-tune the forget prompts towards a refusal ("Sorry, I cannot answer this question.")."""

from .base import StepBatches, UnlearningMethod, answer_logprobs


class RefusalFineTuning(UnlearningMethod):
    name = "idk"
    description = "minimise CE of the refusal on forget prompts"
    # Its budget, chosen by scripts/choose_budgets.py (the ladder's numbers: README, "The budget").
    lr = 6e-4
    uses_refusal = True

    def loss(self, model, batches: StepBatches):
        refusal_nll = answer_logprobs(model, batches.refusal).mean_nll
        return refusal_nll, {"refusal_nll": refusal_nll.item()}
