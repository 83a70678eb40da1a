"""Fixed texts the methods train towards."""

# LUMoE's target (REFERENCE.md) and the `idk`/`po` methods' preferred answer.
REFUSAL_ANSWER = "Sorry, I cannot answer this question."
