"""New base models become partitions; the automation then evaluates them (everything downstream
of base_model is eager). Plus the nightly re-evaluation of every current base model.

Watched: versions registered under mlu-base-model by someone else (a base_model partition tags
the versions it registers or adopts, so those are never taken for new ones), and checkpoint
folders dropped in MLU_BASE_MODELS_DIR. A folder counts once it is unchanged for one tick (a copy
in progress is not evaluated half-written); a known folder whose content changes is evaluated
again under a new run key. The cursor holds the last version seen and every folder's signature.
"""

import json

import dagster as dg

from ..partitions import missing_default_partitions, model_partitions
from ..resources import MLflowTracking, ModelSettings
from .assets import base_model, knowledge_filter


@dg.sensor(target=[base_model], minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Turns new mlu-base-model versions and checkpoint folders (MLU_BASE_MODELS_DIR) into base "
                       "model partitions, which the automation then evaluates.")
def new_base_models(context: dg.SensorEvaluationContext, models: ModelSettings, mlflow: MLflowTracking):
    from mlu_training.models.sources import PARTITION_TAG, REGISTERED_BASE, folder_signature, named_folders, registry_key

    state = {"registry": 0, "folders": {}, "pending": {}, "complaints": [], **json.loads(context.cursor or "{}")}
    existing = set(context.instance.get_dynamic_partitions(model_partitions.name))
    default = models.default_key()
    add = [] if default in existing else [default]

    for version in mlflow.store().registry_versions(REGISTERED_BASE):
        if int(version.version) <= state["registry"]:
            continue
        state["registry"] = int(version.version)
        key = registry_key(version.version)
        if PARTITION_TAG not in version.tags and key not in existing and key not in add:
            context.log.info(f"new base model: {REGISTERED_BASE} version {version.version} becomes {key}")
            add.append(key)

    runs = []
    folders, complaints = named_folders(models.models_dir)
    for text in sorted(set(complaints) - set(state["complaints"])):
        context.log.warning(f"base model folder skipped: {text}")
    state["complaints"] = complaints
    for key, folder in folders.items():
        signature = folder_signature(folder)
        if state["folders"].get(key) == signature:
            continue  # evaluated as it is
        if state["pending"].get(key) != signature:
            state["pending"][key] = signature  # new or still changing: look again next tick
            continue
        del state["pending"][key]
        known = state["folders"].get(key) is not None
        state["folders"][key] = signature
        if key not in existing and key not in add:
            context.log.info(f"new base model: checkpoint folder {folder} becomes {key}")
            add.append(key)
        elif key in existing and known:  # the same name, new weights
            runs.append(dg.RunRequest(run_key=f"base_model:{key}:{signature[:16]}", partition_key=key,
                                      tags={"mlu/base_model": key}))
    cursor = json.dumps(state, sort_keys=True)
    if not add and not runs:
        return dg.SensorResult(skip_reason="no new base model", cursor=cursor)
    return dg.SensorResult(run_requests=runs, cursor=cursor,
                           dynamic_partitions_requests=[model_partitions.build_add_request(add)] if add else [])


@dg.schedule(cron_schedule="0 2 * * *", target=[knowledge_filter], default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Every night at 02:00: each base model's knowledge filter is judged again; the automation "
                         "carries any change down to the sequences, LUMoE and the report.")
def nightly_reevaluation(context: dg.ScheduleEvaluationContext):
    keys = context.instance.get_dynamic_partitions(model_partitions.name)
    if not keys:
        return dg.SkipReason("no base model yet")
    night = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [dg.RunRequest(run_key=f"nightly:{key}:{night}", partition_key=key, tags={"mlu/nightly": night})
            for key in keys]
