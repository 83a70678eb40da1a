"""The one entry point: `mlu_assets.definitions:defs` (workspace.yaml loads it).

Domains live in their own folders (benchmark/, models/, unlearning/, lumoe/, evaluation/,
robustness/); this
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
from . import robustness
from .runs import build_orphaned_runs_sensor
from .unlearning import assets as unlearning_assets

# The main job, stage by stage: each stage is one job, partitioned as its assets are.
STAGES = tuple(
    dg.define_asset_job(name, selection=selection, partitions_def=partitions, description=description)
    for name, selection, partitions, description in (
        ("benchmark_job", dg.AssetSelection.groups(benchmark_assets.GROUP), None,
         "Release → entities → QA → images → validated QA → splits."),
        ("base_model_job", dg.AssetSelection.groups(model_assets.GROUP), model_partitions,
         "One base model (a partition) registered in MLflow, and what it knows."),
        ("unlearning_job", dg.AssetSelection.assets(unlearning_assets.unlearning_sequence), method_and_model,
         "One baseline method over the task sequence on one base model."),
        ("lumoe_expert_job", dg.AssetSelection.assets(lumoe_assets.lumoe_experts), model_and_request,
         "The LoRA expert of one request on one base model, registered in MLflow."),
        ("lumoe_job", dg.AssetSelection.assets(lumoe_assets.lumoe_sequence), model_partitions,
         "LUMoE over every registered request on one base model."),
        ("report_job", dg.AssetSelection.assets(evaluation_assets.report), None,
         "The leaderboard, heatmaps and curves over the newest run of every method."),
    ))

# Robustness (issue 15) is not a stage of `mlu run`: `mlu robustness` launches its jobs after one,
# one job per way its assets are partitioned (a job takes one partitions definition).
ROBUSTNESS_ASSETS = dg.load_assets_from_package_module(robustness)


def _robustness_jobs(assets) -> tuple:
    named = {id(None): "robustness_job", id(model_partitions): "robustness_model_job",
             id(method_and_model): "robustness_method_job"}
    groups: list[tuple[object, list]] = []
    for asset in assets:
        for partitions, members in groups:
            if partitions == asset.partitions_def:
                members.append(asset)
                break
        else:
            groups.append((asset.partitions_def, [asset]))
    return tuple(
        dg.define_asset_job(named.get(id(partitions), f"robustness_job_{i}"), selection=dg.AssetSelection.assets(*members),
                            partitions_def=partitions, description="The robustness group's assets partitioned alike.")
        for i, (partitions, members) in enumerate(groups))


ROBUSTNESS_JOBS = _robustness_jobs(ROBUSTNESS_ASSETS)

defs = dg.Definitions(
    assets=[*dg.load_assets_from_modules([benchmark_assets, model_assets, unlearning_assets, lumoe_assets,
                                          evaluation_assets]), *ROBUSTNESS_ASSETS],
    jobs=[*STAGES, *ROBUSTNESS_JOBS],
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
