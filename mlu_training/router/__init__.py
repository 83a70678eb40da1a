"""Routers: entity extraction → match to a past request's forget entities → its expert, or None
→ the base model. Backends: local (default, offline), openai (an OpenAI-compatible vision
endpoint), oracle (the ground truth, for ablation)."""

from .base import Registry, Route, router_quality

# Each backend's rule, as results kept on disk know it: LUMoE's sequence (and through its key the
# router audit and the attacks) is read back only under the rule that made it. Bump a backend's
# entry when what it decides for the same inputs changes.
ROUTER_RECIPES = {
    # 2: the threshold no longer depends on which entities are forgotten (and, with no
    # distractors, is calibrated against other entities' centroids)
    "local": "local-2",
    "openai": "openai-1",
    "oracle": "oracle-1",
}

__all__ = ["ROUTER_RECIPES", "Registry", "Route", "router_quality"]
