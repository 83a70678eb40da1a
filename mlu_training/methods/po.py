"""PO — preference optimisation: on forget prompts, prefer the refusal over the true answer
relative to the reference model (the model before this step, adapter off), the DPO objective
-log σ(β·[(log π(refusal) − log π_ref(refusal)) − (log π(answer) − log π_ref(answer))]),
plus `refusal_weight` × the refusal's cross-entropy (DPO + NLL on the preferred answer, as in
RPO): DPO alone lowers the true answer without making the refusal what the model says.
The published code computed DPO and then overwrote it with plain refusal fine-tuning.
The refusal and the true answer go through the model in one batch (one forward pass, not two)."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models.vlm import VisionLanguageModel
from .base import StepBatches, UnlearningMethod, answer_logprobs


class PreferenceOptimisation(UnlearningMethod):
    name = "po"
    description = "DPO (refusal preferred over the true answer) + NLL of the refusal"
    uses_refusal = True

    @dataclass(frozen=True)
    class Args:
        beta: float = 0.1  # DPO's inverse temperature
        refusal_weight: float = 1.0  # weight of the refusal's NLL beside DPO

    def loss(self, model, batches: StepBatches):
        n = len(batches.forget["input_ids"])
        both = VisionLanguageModel.concat_training_batches(batches.refusal, batches.forget)
        tokens = answer_logprobs(model, both)
        chosen_tokens = tokens.rows(slice(None, n))
        chosen, rejected = chosen_tokens.sequence, tokens.rows(slice(n, None)).sequence
        # per row: (log π_ref(refusal), log π_ref(answer))
        reference = torch.stack(self.frozen_reference(
            model, batches, "refusal and forget sequences", batches.forget_rows,
            lambda ref: answer_logprobs(ref, both).sequence.view(2, n).T))
        chosen_ref, rejected_ref = reference[:, 0], reference[:, 1]
        margin = (chosen - chosen_ref) - (rejected - rejected_ref)
        dpo = -F.logsigmoid(self.args.beta * margin).mean()
        refusal_nll = chosen_tokens.mean_nll
        return dpo + self.args.refusal_weight * refusal_nll, {
            "dpo": dpo.item(), "refusal_nll": refusal_nll.item(), "margin": margin.mean().item(),
            "accuracy": (margin > 0).float().mean().item()}
