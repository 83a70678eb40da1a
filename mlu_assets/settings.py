"""Settings: every environment variable mlu reads, with its default, defined once here.

Resources are built from this table (resources.py: `build_resources`), so the definitions, the
CLI and the tests configure mlu the same way. A variable set in the environment becomes an
`EnvVar`, resolved when a run starts (the UI shows its name, never a secret's value); an unset
one falls back to its default.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass

import dagster as dg

from mlu_training import paths


@dataclass(frozen=True)
class Setting:
    variable: str
    resource: str  # the resource key it configures
    field: str  # the resource's field
    default: str | None
    meaning: str
    empty_means_off: bool = False  # an empty value is a choice (turn it off), not "unset"
    kind: type = str  # the resource field's type: str, or int (read from the environment as a number)

    def given(self, env: typing.Mapping[str, str]) -> bool:
        """Whether the user set it: a non-empty value, or an empty one where empty means off."""
        return bool(env.get(self.variable)) or (self.empty_means_off and self.variable in env)


def _settings() -> tuple[Setting, ...]:
    from mlu_training.data.release import UPSTREAM_BASE_URL

    return (
        Setting("MLU_PROFILE", "benchmark", "profile", "mini", "how much of the benchmark: tiny | mini | full"),
        Setting("MLU_DATA_DIR", "benchmark", "data_dir", str(paths.default_data_dir()), "what mlu makes"),
        Setting("MLU_CACHE_DIR", "benchmark", "cache_dir", str(paths.default_cache_dir()), "verified, extracted releases"),
        Setting("MLU_MLUBENCH_PATH", "benchmark", "mlubench_path", None, "your copy of the release"),
        Setting("MLU_MLUBENCH_UPSTREAM", "benchmark", "upstream_url", UPSTREAM_BASE_URL, "where to download the release; empty: never download",
                empty_means_off=True),
        Setting("MLU_IMAGES_DIR", "benchmark", "images_dir", None, "the official downloaded_images/ folder"),
        Setting("MLU_BASE_MODEL", "models", "base_model_path", None, "a local checkpoint folder: the default base model"),
        Setting("MLU_BASE_MODELS_DIR", "models", "models_dir", str(paths.default_base_models_dir()),
                "where checkpoint folders are dropped"),
        Setting("MLU_JUDGE", "judge", "backend", "local", "local | openai"),
        Setting("MLU_JUDGE_MODEL", "judge", "model", "gpt-4o", "the judge model at the endpoint"),
        Setting("OPENAI_BASE_URL", "judge", "base_url", None, "an OpenAI-compatible endpoint"),
        Setting("OPENAI_API_KEY", "judge", "api_key", None, "its key (never logged)"),
        Setting("MLU_API_CACHE_URL", "judge", "cache_url", None, "where API judgements are cached"),
        Setting("MLU_ROUTER", "routing", "backend", "local", "local | openai | oracle"),
        Setting("MLU_ROUTER_MODEL", "routing", "model", "gpt-4o", "the vision model of the openai router"),
        Setting("OPENAI_BASE_URL", "routing", "base_url", None, "an OpenAI-compatible endpoint"),
        Setting("OPENAI_API_KEY", "routing", "api_key", None, "its key (never logged)"),
        Setting("MLU_API_CACHE_URL", "routing", "cache_url", None, "where API routes are cached"),
        Setting("MLU_REQUESTS_DIR", "routing", "requests_dir", str(paths.default_requests_dir()),
                "where unlearning request files are picked up"),
        Setting("MLFLOW_TRACKING_URI", "mlflow", "tracking_uri", paths.default_tracking_uri(), "MLflow tracking and registry"),
        Setting("MLU_PARALLEL_RUNS", "compute", "parallel_runs", "2", "runs at once: `mlu run`'s baselines and experts; "
                "each takes its share of the cores (keep dagster.yaml's max_concurrent_runs equal)", kind=int),
        Setting("MLU_THREADS", "compute", "threads", None, "torch threads per run (default: the cores / the runs at once)",
                kind=int),
    )


SETTINGS = _settings()


def setting(variable: str, environ: typing.Mapping[str, str] | None = None) -> str | None:
    """The value a setting has now (the environment's, else its default), for code that runs
    outside a Dagster run (the CLI); inside runs, resources carry it."""
    env = os.environ if environ is None else environ
    row = next(s for s in SETTINGS if s.variable == variable)
    return env[variable] if row.given(env) else row.default


def resource_fields(resource: str, environ: typing.Mapping[str, str] | None = None) -> dict:
    """A resource's fields from the settings: an `EnvVar` where the variable is set, else the default."""
    env = os.environ if environ is None else environ

    def value(s: Setting):
        if s.given(env):
            return dg.EnvVar.int(s.variable) if s.kind is int else dg.EnvVar(s.variable)
        return s.kind(s.default) if s.default is not None else None

    return {s.field: value(s) for s in SETTINGS if s.resource == resource}


# -- Launchpad configs from the plain dataclasses of mlu_training -------------------------------

def config_from_dataclass(name: str, source, exclude: tuple[str, ...] = (), doc: str = "",
                          **extra_fields) -> type[dg.Config]:
    """A Launchpad config with the fields and defaults of a plain dataclass of mlu_training (a
    nested dataclass becomes a nested config), so the two never drift apart. `extra_fields`
    (name=(type, default)) replace or add fields."""
    import pydantic

    hints = typing.get_type_hints(source)  # annotations are strings under PEP 563
    fields = {}
    for f in dataclasses.fields(source):
        if f.name in exclude:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            nested = config_from_dataclass(f"{kind.__name__}Config", kind)
            fields[f.name] = (nested, nested(**dataclasses.asdict(default)))
        else:
            fields[f.name] = (kind, default)
    fields.update(extra_fields)
    model = pydantic.create_model(name, __base__=dg.Config, **fields)
    model.__doc__ = doc or source.__doc__
    return model


def dataclass_from_config(target, values: dict, **fixed):
    """The plain dataclass from a Launchpad config's values (`config.model_dump()`), nested
    dataclasses included; `fixed` fields win (e.g. the method, from the partition)."""
    hints = typing.get_type_hints(target)
    kwargs = {}
    for f in dataclasses.fields(target):
        if f.name in fixed:
            kwargs[f.name] = fixed[f.name]
        elif f.name in values:
            kind = hints[f.name]
            kwargs[f.name] = dataclass_from_config(kind, values[f.name]) if dataclasses.is_dataclass(kind) else values[f.name]
    return target(**kwargs)
