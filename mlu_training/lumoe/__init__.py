"""LUMoE: one LoRA expert per unlearning request on a frozen base model, and a router that sends
each query to an expert or to the untouched base model."""
