"""Resources: the benchmark's settings, the base models, the judge, the router and MLflow. Each is
a ConfigurableResource; `build_resources` makes all of them from the settings table (settings.py),
for the definitions, the CLI and the tests alike. The logic they configure lives in mlu_training."""

from __future__ import annotations

import typing
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from mlu_training import paths
from mlu_training.data.release import UPSTREAM_BASE_URL

from .settings import resource_fields


class BenchmarkSettings(dg.ConfigurableResource):
    """Where the release comes from, which profile to run, where outputs go."""

    profile: str = "mini"  # MLU_PROFILE
    data_dir: str = str(paths.default_data_dir())  # MLU_DATA_DIR
    cache_dir: str = str(paths.default_cache_dir())  # MLU_CACHE_DIR
    mlubench_path: str | None = None  # MLU_MLUBENCH_PATH: a folder or zip
    shared_release_dir: str | None = str(paths.default_shared_release_dir())
    upstream_url: str | None = UPSTREAM_BASE_URL  # MLU_MLUBENCH_UPSTREAM ("" turns it off)
    images_dir: str | None = None  # MLU_IMAGES_DIR: the official downloaded_images/ folder

    def resolver(self):
        from mlu_training.data.release import ReleaseResolver

        return ReleaseResolver(
            cache_dir=Path(self.cache_dir),
            explicit_path=self.mlubench_path,
            shared_dir=Path(self.shared_release_dir) if self.shared_release_dir else None,
            upstream_base_url=self.upstream_url or None,
        )

    def get_profile(self):
        from mlu_training.profiles import get_profile

        return get_profile(self.profile)

    def path(self, *parts: str) -> Path:
        """A place under MLU_DATA_DIR."""
        return Path(self.data_dir, *parts)


class MLflowTracking(dg.ConfigurableResource):
    """MLflow tracking and model registry (same URI). Default: SQLite under the project. Assets
    use its store: runs, curves and the registry (mlu_training.mlflow_store.MlflowStore)."""

    tracking_uri: str = paths.default_tracking_uri()  # MLFLOW_TRACKING_URI
    experiment: str = "mlubench"
    _store = PrivateAttr(default=None)

    def store(self):
        """The run's one MlflowStore (one client for every call of the run)."""
        if self._store is None:
            from mlu_training.mlflow_store import MlflowStore

            self._store = MlflowStore(self.tracking_uri, self.experiment)
        return self._store


class JudgeSettings(dg.ConfigurableResource):
    """Who scores answers: `local` rules (default, offline) or an OpenAI-compatible endpoint."""

    backend: str = "local"  # MLU_JUDGE: local | openai
    model: str = "gpt-4o"  # MLU_JUDGE_MODEL
    base_url: str | None = None  # OPENAI_BASE_URL
    api_key: str | None = None  # OPENAI_API_KEY: only ever an EnvVar, never logged
    cache_url: str | None = None  # MLU_API_CACHE_URL; default a SQLite file in MLU_DATA_DIR
    concurrency: int = 8

    def build(self, data_dir: str, qa=None):
        """The judge. `qa`: the release's whole QA table (validated_qa_pairs), which the offline
        judge reads to tell an entity's own facts from its class's template; without it, it judges
        by the ground truth alone (less reliable: see judge/local.py)."""
        from mlu_training.judge import LocalJudge

        if self.backend == "local":
            return LocalJudge.from_qa(qa) if qa is not None else LocalJudge()
        if self.backend == "openai":
            from mlu_training.judge import OpenAIJudge

            return OpenAIJudge(self.model, base_url=self.base_url, api_key=self.api_key,
                               cache_url=self.cache_url or f"sqlite:///{Path(data_dir) / 'api_cache.sqlite'}",
                               concurrency=self.concurrency)
        raise ValueError(f"MLU_JUDGE={self.backend!r}: choose local or openai")

    def describe(self) -> str:
        if self.backend == "local":
            from mlu_training.judge.local import LocalJudge  # light: no model, no client

            return f"local {LocalJudge.version}"
        return f"{self.model} at {self.base_url or 'api.openai.com'}"


class ModelSettings(dg.ConfigurableResource):
    """Which base models: the default one (a local checkpoint folder, MLU_BASE_MODEL, or the
    in-project tiny LLaVA) and any checkpoint folder dropped in MLU_BASE_MODELS_DIR."""

    base_model_path: str | None = None  # MLU_BASE_MODEL
    models_dir: str = str(paths.default_base_models_dir())  # MLU_BASE_MODELS_DIR

    def default_key(self) -> str:
        from mlu_training.models.sources import default_key

        return default_key(self.base_model_path)

    def resolve(self, key: str):
        from mlu_training.models.sources import resolve

        return resolve(key, self.base_model_path, self.models_dir)


class RouterSettings(dg.ConfigurableResource):
    """How LUMoE picks an expert: `local` (default, offline), `openai`, or `oracle` (ablation)."""

    backend: str = "local"  # MLU_ROUTER
    requests_dir: str = str(paths.default_requests_dir())  # MLU_REQUESTS_DIR
    model: str = "gpt-4o"  # MLU_ROUTER_MODEL
    base_url: str | None = None  # OPENAI_BASE_URL
    api_key: str | None = None  # OPENAI_API_KEY: only ever an EnvVar, never logged
    cache_url: str | None = None  # MLU_API_CACHE_URL

    def factory(self, gallery, load_image, entity_classes: dict[str, str] | None = None, data_dir: str = ".",
                distractors=()):
        """(vlm, registry) -> router; `distractors`: images the local router calibrates against
        as ones to leave to the base model (entities outside the gallery)."""
        if self.backend == "openai":
            from mlu_training.router.openai_router import OpenAIRouter

            cache = self.cache_url or f"sqlite:///{Path(data_dir) / 'api_cache.sqlite'}"
            return lambda vlm, registry: OpenAIRouter(registry, entity_classes or {}, self.model, self.base_url,
                                                      self.api_key, cache)
        if self.backend == "local":
            from mlu_training.router.local import LocalRouter

            return lambda vlm, registry: LocalRouter(vlm, registry, gallery, load_image, distractors=distractors)
        if self.backend == "oracle":
            from mlu_training.router.oracle import OracleRouter

            return lambda vlm, registry: OracleRouter(registry)
        raise ValueError(f"MLU_ROUTER={self.backend!r}: choose local, openai or oracle")


class ComputeSettings(dg.ConfigurableResource):
    """How a run uses the machine's cores (mlu_training/threads.py has the rules and why)."""

    parallel_runs: int = 2  # MLU_PARALLEL_RUNS: runs of the baselines and experts at once
    threads: int | None = None  # MLU_THREADS: torch threads per run, overriding the share

    def use_threads(self, shares_machine: bool) -> int:
        """Torch threads for this run: its share of the cores when runs like it go side by side
        (the baselines, the experts), every core when it runs alone by design."""
        from mlu_training.threads import use_threads

        return use_threads(self.parallel_runs if shares_machine else 1, self.threads)


RESOURCE_TYPES = {"benchmark": BenchmarkSettings, "models": ModelSettings, "judge": JudgeSettings,
                  "routing": RouterSettings, "mlflow": MLflowTracking,
                  "compute": ComputeSettings}


def build_resources(overrides: dict[str, dict] | None = None, environ: typing.Mapping[str, str] | None = None) -> dict:
    """Every resource (and the IO manager) from the settings: the environment's values as EnvVars,
    else the defaults; `overrides` ({"benchmark": {"profile": "tiny"}, …}) win, as tests use them."""
    from .io import TableIOManager

    overrides = overrides or {}
    resources = {key: cls(**{**resource_fields(key, environ), **overrides.get(key, {})})
                 for key, cls in RESOURCE_TYPES.items()}
    data_dir = overrides.get("benchmark", {}).get("data_dir") or resource_fields("benchmark", environ)["data_dir"]
    resources["io_manager"] = TableIOManager(base_dir=data_dir)
    return resources
