"""PO — preference optimisation (DPO): on forget prompts, prefer the refusal over the true
answer, relative to the reference model (the model before this step, adapter off):
-log σ(β·[(log π(refusal) − log π_ref(refusal)) − (log π(answer) − log π_ref(answer))]).
The published code computed this and then overwrote it with plain refusal fine-tuning."""

import torch.nn.functional as F

from .base import StepBatches, UnlearningMethod, answer_logprobs, reference_model


class PreferenceOptimisation(UnlearningMethod):
    name = "po"
    description = "DPO: refusal preferred over the true answer on forget prompts"
    uses_refusal = True

    def loss(self, model, batches: StepBatches):
        chosen = answer_logprobs(model, batches.refusal).sequence
        rejected = answer_logprobs(model, batches.forget).sequence
        with reference_model(model) as ref:
            chosen_ref = answer_logprobs(ref, batches.refusal).sequence
            rejected_ref = answer_logprobs(ref, batches.forget).sequence
        margin = (chosen - chosen_ref) - (rejected - rejected_ref)
        loss = -F.logsigmoid(self.beta * margin).mean()
        return loss, {"margin": margin.mean().item(), "accuracy": (margin > 0).float().mean().item()}
