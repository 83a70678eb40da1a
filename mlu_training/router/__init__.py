"""Routers: entity extraction → match to a past request's forget entities → its expert, or None
→ the base model. Backends: local (default, offline), openai (an OpenAI-compatible vision
endpoint), oracle (the ground truth, for ablation)."""

from .base import Registry, Route, router_quality

__all__ = ["Registry", "Route", "router_quality"]
