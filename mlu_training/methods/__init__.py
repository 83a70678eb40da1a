"""Unlearning methods: one small class per file, registered here by name.

Add a method: write `mymethod.py` with a subclass of base.UnlearningMethod (its `loss`, whether
it uses retain data or refusals, and its own hyperparameters as an `Args` dataclass), then add one
line to METHODS. Its arguments reach it from the Launchpad as `method_args: {"<name>": {...}}`. Entries name the class as
"module:Class" so that listing the methods (Dagster partitions, the CLI) does not import torch.
"""

from __future__ import annotations

from importlib import import_module

METHODS: dict[str, str] = {
    "ga": "ga:GradientAscent",
    "gd": "gd:GradientDifference",
    "kl": "kl:KLMinimisation",
    "npo": "npo:NegativePreferenceOptimisation",
    "idk": "idk:RefusalFineTuning",
    "po": "po:PreferenceOptimisation",
}


def method_class(name: str):
    try:
        module, cls = METHODS[name].split(":")
    except KeyError:
        raise ValueError(f"unknown method {name!r}; registered: {', '.join(METHODS)}") from None
    return getattr(import_module(f".{module}", __name__), cls)


def get_method(name: str, args: dict | None = None):
    """The method `name` with its arguments: its defaults, overridden by `args`."""
    cls = method_class(name)
    return cls(cls.make_args(args))


def resolved_args(name: str, args: dict | None = None) -> dict:
    """Every argument of method `name`, defaults filled in: what a result depends on."""
    from dataclasses import asdict

    return asdict(method_class(name).make_args(args))


def resolved_settings(config) -> dict:
    """A config with `method`, `training` (an AdapterTraining) and `method_args` (an unlearning
    sequence's, an expert's), as everything its result depends on: the language rate it trains
    at (the method's budget unless given) and the method's arguments with their defaults."""
    from dataclasses import asdict

    training = config.training.at_rate(method_class(config.method).lr).as_dict()
    return {**asdict(config), "training": training, "method_args": resolved_args(config.method, config.method_args)}
