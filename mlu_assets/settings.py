"""Settings come from the environment through EnvVar, resolved when a run starts, so a value set
in the shell wins and secrets never show up in the UI. Unset variables fall back to defaults."""

from __future__ import annotations

import os

import dagster as dg


def setting(name: str, default: str | None) -> dg.EnvVar | str | None:
    return dg.EnvVar(name) if os.environ.get(name) else default


def config_from_dataclass(name: str, source, exclude: tuple[str, ...] = (), doc: str = "") -> type[dg.Config]:
    """A Launchpad config with the fields and defaults of a plain dataclass of mlu_training, so
    the two never drift apart."""
    import dataclasses

    import pydantic

    builtin = {"str": str, "int": int, "float": float, "bool": bool}  # annotations are strings under PEP 563
    fields = {f.name: (builtin.get(f.type, f.type), f.default) for f in dataclasses.fields(source) if f.name not in exclude}
    model = pydantic.create_model(name, __base__=dg.Config, **fields)
    model.__doc__ = doc or source.__doc__
    return model
