"""Settings come from the environment through EnvVar, resolved when a run starts, so a value set
in the shell wins and secrets never show up in the UI. Unset variables fall back to defaults."""

from __future__ import annotations

import os

import dagster as dg


def setting(name: str, default: str | None) -> dg.EnvVar | str | None:
    return dg.EnvVar(name) if os.environ.get(name) else default
