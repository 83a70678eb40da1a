"""The one entry point: `mlu_assets.definitions:defs` (workspace.yaml loads it).

Domains live in their own folders (benchmark/, …); this file merges them and sets what is
global: resources, the IO manager, jobs.
"""

from __future__ import annotations

import dagster as dg

from mlu_training import paths

from .benchmark import assets as benchmark_assets
from .evaluation import assets as evaluation_assets
from .io import TableIOManager
from .lumoe import assets as lumoe_assets
from .lumoe.sensors import unlearning_requests
from .models import assets as model_assets
from .models.sensors import new_base_models, nightly_reevaluation
from .unlearning import assets as unlearning_assets
from .resources import BenchmarkSettings, JudgeSettings, MLflowTracking, ModelSettings, RouterSettings
from .settings import setting

data_dir = setting("MLU_DATA_DIR", str(paths.default_data_dir()))

benchmark_job = dg.define_asset_job(
    "benchmark_job", selection=dg.AssetSelection.groups(benchmark_assets.GROUP),
    description="Release → entities → QA → images → validated QA → splits.",
)

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([benchmark_assets, model_assets, unlearning_assets, lumoe_assets,
                                             evaluation_assets]),
    jobs=[benchmark_job],
    sensors=[
        new_base_models,
        unlearning_requests,
        # Declarative automation (evaluation when a base model, a request or an expert arrives);
        # Dagster's own automation sensor starts stopped, so ours is declared running.
        dg.AutomationConditionSensorDefinition("mlu_automation", target=dg.AssetSelection.all(),
                                               default_status=dg.DefaultSensorStatus.RUNNING),
    ],
    schedules=[nightly_reevaluation],
    resources={
        "benchmark": BenchmarkSettings(
            profile=setting("MLU_PROFILE", "mini"),
            data_dir=data_dir,
            cache_dir=setting("MLU_CACHE_DIR", str(paths.default_cache_dir())),
            mlubench_path=setting("MLU_MLUBENCH_PATH", None),
            upstream_url=setting("MLU_MLUBENCH_UPSTREAM", BenchmarkSettings.model_fields["upstream_url"].default),
            images_dir=setting("MLU_IMAGES_DIR", None),
        ),
        "models": ModelSettings(base_model_path=setting("MLU_BASE_MODEL", None),
                                models_dir=setting("MLU_BASE_MODELS_DIR", ModelSettings.model_fields["models_dir"].default)),
        "judge": JudgeSettings(
            backend=setting("MLU_JUDGE", "local"),
            model=setting("MLU_JUDGE_MODEL", "gpt-4o"),
            base_url=setting("OPENAI_BASE_URL", None),
            api_key=setting("OPENAI_API_KEY", None),
            cache_url=setting("MLU_API_CACHE_URL", None),
        ),
        "routing": RouterSettings(
            backend=setting("MLU_ROUTER", "local"),
            requests_dir=setting("MLU_REQUESTS_DIR", RouterSettings.model_fields["requests_dir"].default),
            model=setting("MLU_ROUTER_MODEL", "gpt-4o"),
            base_url=setting("OPENAI_BASE_URL", None),
            api_key=setting("OPENAI_API_KEY", None),
            cache_url=setting("MLU_API_CACHE_URL", None),
        ),
        "mlflow": MLflowTracking(tracking_uri=setting("MLFLOW_TRACKING_URI", paths.default_tracking_uri())),
        "io_manager": TableIOManager(base_dir=data_dir),
    },
)
