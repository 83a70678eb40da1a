"""The one entry point: `mlu_assets.definitions:defs` (workspace.yaml loads it).

Domains live in their own folders (benchmark/, models/, unlearning/, lumoe/, evaluation/); this
file merges them and sets what is global: resources (built from the settings), the IO manager,
the automation sensor and the jobs. The jobs are the main job's stages, as `mlu run` launches
them (cli.py) and as anyone can from the UI's Launchpad.
"""

from __future__ import annotations

import dagster as dg

from .benchmark import assets as benchmark_assets
from .evaluation import assets as evaluation_assets
from .lumoe import assets as lumoe_assets
from .lumoe.sensors import unlearning_requests
from .models import assets as model_assets
from .models.sensors import new_base_models, nightly_reevaluation
from .partitions import method_and_model, model_and_request, model_partitions
from .resources import build_resources
from .runs import build_orphaned_runs_sensor
from .unlearning import assets as unlearning_assets

# The main job, stage by stage: each stage is one job, partitioned as its assets are.
STAGES = (
    dg.define_asset_job("benchmark_job", selection=dg.AssetSelection.groups(benchmark_assets.GROUP),
                        description="Release → entities → QA → images → validated QA → splits."),
    dg.define_asset_job("base_model_job", selection=dg.AssetSelection.groups(model_assets.GROUP),
                        partitions_def=model_partitions,
                        description="One base model (a partition) registered in MLflow, and what it knows."),
    dg.define_asset_job("unlearning_job", selection=dg.AssetSelection.assets(unlearning_assets.unlearning_sequence),
                        partitions_def=method_and_model,
                        description="One baseline method over the task sequence on one base model."),
    dg.define_asset_job("lumoe_expert_job", selection=dg.AssetSelection.assets(lumoe_assets.lumoe_experts),
                        partitions_def=model_and_request,
                        description="The LoRA expert of one request on one base model, registered in MLflow."),
    dg.define_asset_job("lumoe_job", selection=dg.AssetSelection.assets(lumoe_assets.lumoe_sequence),
                        partitions_def=model_partitions,
                        description="LUMoE over every registered request on one base model."),
    dg.define_asset_job("report_job", selection=dg.AssetSelection.assets(evaluation_assets.report),
                        description="The leaderboard, heatmaps and curves over the newest run of every method."),
)

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([benchmark_assets, model_assets, unlearning_assets, lumoe_assets,
                                        evaluation_assets]),
    jobs=list(STAGES),
    sensors=[
        new_base_models,
        unlearning_requests,
        build_orphaned_runs_sensor(STAGES),  # a run whose process died is failed and queued again
        # Declarative automation (evaluation when a base model, a request or an expert arrives);
        # Dagster's own automation sensor starts stopped, so ours is declared running.
        dg.AutomationConditionSensorDefinition("mlu_automation", target=dg.AssetSelection.all(),
                                               default_status=dg.DefaultSensorStatus.RUNNING),
    ],
    schedules=[nightly_reevaluation],
    resources=build_resources(),
)
