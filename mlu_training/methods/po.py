"""PO — preference optimisation: on forget prompts, prefer the refusal over the true answer
relative to the reference model (the model before this step, adapter off), the DPO objective
-log σ(β·[(log π(refusal) − log π_ref(refusal)) − (log π(answer) − log π_ref(answer))]),
plus `refusal_weight` × the refusal's cross-entropy (DPO + NLL on the preferred answer, as in
RPO): DPO alone lowers the true answer without making the refusal what the model says.
The published code computed DPO and then overwrote it with plain refusal fine-tuning.
The refusal and the true answer go through the model in two passes, not one batch of both: padded
to one length they are 78 % real tokens against 94 % apart, and on CPU one pass of both cost 1.2x
the two (bench/unlearning.py, mini, one thread)."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import StepBatches, UnlearningMethod, answer_logprobs


class PreferenceOptimisation(UnlearningMethod):
    name = "po"
    description = "DPO (refusal preferred over the true answer) + NLL of the refusal"
    # Its budget, chosen by scripts/choose_budgets.py (the ladder's numbers: README, "The budget").
    lr = 6e-4
    uses_refusal = True

    @dataclass(frozen=True)
    class Args:
        beta: float = 0.1  # DPO's inverse temperature
        refusal_weight: float = 1.0  # weight of the refusal's NLL beside DPO

    def loss(self, model, batches: StepBatches):
        chosen_tokens = answer_logprobs(model, batches.refusal)
        chosen = chosen_tokens.sequence
        rejected = answer_logprobs(model, batches.forget).sequence
        # per row: (log π_ref(refusal), log π_ref(answer))
        reference = torch.stack(self.frozen_reference(
            model, batches, "refusal and forget sequences", batches.forget_rows,
            lambda ref: torch.stack([answer_logprobs(ref, b).sequence for b in (batches.refusal, batches.forget)], -1)))
        chosen_ref, rejected_ref = reference[:, 0], reference[:, 1]
        margin = (chosen - chosen_ref) - (rejected - rejected_ref)
        dpo = -F.logsigmoid(self.args.beta * margin).mean()
        refusal_nll = chosen_tokens.mean_nll
        return dpo + self.args.refusal_weight * refusal_nll, {
            "dpo": dpo.item(), "refusal_nll": refusal_nll.item(), "margin": margin.mean().item(),
            "accuracy": (margin > 0).float().mean().item()}
