"""IDK — fine-tune the forget prompts towards a refusal ("Sorry, I cannot answer this question.")."""

from .base import StepBatches, UnlearningMethod, answer_logprobs


class RefusalFineTuning(UnlearningMethod):
    name = "idk"
    description = "minimise CE of the refusal on forget prompts"
    # Its budget (scripts/choose_budgets.py): task A's forgotten items still answered after the
    # first request on mini, by rate: 3e-4 97 %, 4.2e-4 97 %, 6e-4 27 %.
    lr = 6e-4
    uses_refusal = True

    def loss(self, model, batches: StepBatches):
        refusal_nll = answer_logprobs(model, batches.refusal).mean_nll
        return refusal_nll, {"refusal_nll": refusal_nll.item()}
