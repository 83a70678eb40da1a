"""Group `benchmark`: the MLUBench release → entities → QA pairs → images → validated QA → splits.

Each asset is a thin wrapper over mlu_training.data; bad input stops the graph here with the
file, record and field named, and nothing downstream is written.
"""


from pathlib import Path

import dagster as dg

from mlu_training.data.release import Release
from mlu_training.data.validation import check_names

from ..resources import BenchmarkSettings, MLflowTracking

GROUP = "benchmark"
SUITE = "validated_qa_pairs"


def _table_metadata(df, **extra) -> dict:
    return {"dagster/row_count": len(df), "num_rows": len(df), **extra}


def _md(df) -> dg.MetadataValue:
    return dg.MetadataValue.md(df.to_markdown(index=False))


def _release_failure(error) -> dg.Failure:
    """A ReleaseDataError as a Dagster failure whose metadata points at the bad spot."""
    return dg.Failure(
        description=str(error),
        metadata={"file": error.file, "record": -1 if error.record is None else error.record,
                  "field": error.field or "", "problem": error.problem},
    )


@dg.asset(group_name=GROUP, kinds={"python"})
def mlubench_release(context: dg.AssetExecutionContext, benchmark: BenchmarkSettings) -> dg.Output[Release]:
    """The MLUBench release, found (MLU_MLUBENCH_PATH → ../shared → cache → upstream), verified
    by sha256 and extracted once into the cache."""
    import pandas as pd

    from mlu_training.data.release import ReleaseNotFoundError

    try:
        release = benchmark.resolver().resolve()
    except ReleaseNotFoundError as e:
        raise dg.Failure(description=str(e), metadata={"tried": _md(pd.DataFrame(e.attempts, columns=["source", "result"]))}) from None
    if not release.official:
        context.log.warning(f"The release at {release.origin} differs from the published MLUBench; results are not comparable.")
    return dg.Output(release, metadata={
        "origin": release.origin, "official": release.official, "digest": release.digest,
        "root": dg.MetadataValue.path(str(release.root)),
        "tried": _md(pd.DataFrame(release.attempts, columns=["source", "result"])),
    })


@dg.asset(group_name=GROUP, kinds={"pandas"})
def entity_catalog(mlubench_release: Release):
    """One row per entity (127 in the release): id, display name, class, task, role, aliases.
    Derived from the data's image paths; the release's own entity lists are compared, not trusted."""
    from mlu_training.data.catalog import build_entity_catalog, read_entity_lists
    from mlu_training.benchmark import ROLES, TASKS
    from mlu_training.data.records import ReleaseDataError, read_records, task_files

    root = mlubench_release.root
    try:
        records = [r for src in task_files() for r in read_records(root, src)]
    except ReleaseDataError as e:
        raise _release_failure(e) from None
    catalog, unmatched = build_entity_catalog(records, read_entity_lists(root, TASKS, ROLES))
    per_side = catalog.groupby(["task", "role"]).size().unstack(fill_value=0).reset_index()
    return dg.Output(catalog, metadata=_table_metadata(
        catalog,
        num_classes=int(catalog["class_name"].nunique()),
        entities_per_task=_md(per_side),
        listed_without_data=dg.MetadataValue.json(unmatched),
        preview=_md(catalog.head(10)),
    ))


@dg.asset(group_name=GROUP, kinds={"pandas"})
def qa_pairs(mlubench_release: Release, entity_catalog):
    """Every QA pair: the task files (split train, 15,414) and the evaluation items with their
    paraphrases (split eval, 549 x 5), labelled with class question and phrasing variant."""
    from mlu_training.data.qa import build_qa_pairs, read_all_records
    from mlu_training.data.questions import QuestionBook
    from mlu_training.benchmark import CLASSES
    from mlu_training.data.records import ReleaseDataError

    root = mlubench_release.root
    try:
        train, evaluation = read_all_records(root)
    except ReleaseDataError as e:
        raise _release_failure(e) from None
    qa = build_qa_pairs(train + evaluation, QuestionBook.from_release(root, CLASSES), entity_catalog)
    counts = qa.groupby(["split", "variant"], dropna=False).size().rename("rows").reset_index()
    return dg.Output(qa, metadata=_table_metadata(
        qa, num_train=int((qa["split"] == "train").sum()), num_eval=int((qa["split"] == "eval").sum()),
        rows_per_split_and_variant=_md(counts), preview=_md(qa.head(5)),
    ))


@dg.asset(group_name=GROUP, kinds={"python"})
def raw_crawls(context: dg.AssetExecutionContext, qa_pairs, benchmark: BenchmarkSettings):
    """An image for every image path of the release (2,453): the official file when MLU_IMAGES_DIR
    points at downloaded_images/, else a deterministic synthetic render. Provenance per image."""
    from mlu_training.data.crawls import CorruptImagesError, build_raw_crawls

    profile = benchmark.get_profile()
    if benchmark.images_dir and not Path(benchmark.images_dir).is_dir():  # a setting given wins or fails
        raise dg.Failure(description=f"MLU_IMAGES_DIR={benchmark.images_dir}: no such folder (it should be the "
                                     "official downloaded_images/ folder; unset it to render stand-in images)")
    try:
        crawls = build_raw_crawls(
            qa_pairs["image"].tolist(), Path(benchmark.data_dir), size=profile.image_size,
            seed=profile.seed, official_dir=Path(benchmark.images_dir) if benchmark.images_dir else None,
        )
    except CorruptImagesError as e:
        raise dg.Failure(description=str(e), metadata={"corrupt": dg.MetadataValue.json(dict(e.problems))}) from None
    by_source = crawls["source"].value_counts().to_dict()
    if benchmark.images_dir and by_source.get("synthetic"):
        context.log.warning(f"{by_source['synthetic']} image paths have no official file under {benchmark.images_dir}; rendered instead.")
    return dg.Output(crawls, metadata=_table_metadata(
        crawls, num_images=len(crawls), by_source=dg.MetadataValue.json(by_source),
        total_bytes=int(crawls["bytes"].sum()),
    ))


@dg.asset(
    group_name=GROUP, kinds={"pandas"}, output_required=False,
    check_specs=[dg.AssetCheckSpec(name, asset="validated_qa_pairs", description=text, blocking=True)
                 for name, text in check_names(SUITE)],
)
def validated_qa_pairs(qa_pairs, entity_catalog, raw_crawls):
    """The QA pairs that passed the Great Expectations suite expectations/validated_qa_pairs.json.
    Each expectation is a blocking check: one failure stops the graph here, naming the rows."""
    from mlu_training.data.validation import validate, with_task_roles

    outcomes = validate(with_task_roles(qa_pairs), SUITE, {
        "catalog_entity_ids": entity_catalog["entity_id"].tolist(),
        "crawled_images": raw_crawls["image"].tolist(),
    })
    for o in outcomes:
        yield dg.AssetCheckResult(
            check_name=o.check_name, passed=o.passed, description=o.summary(),
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"unexpected_count": o.unexpected_count, "expectation": o.expectation_type,
                      "column": o.column, "examples": dg.MetadataValue.json(o.examples)},
        )
    if all(o.passed for o in outcomes):  # a failing suite stores nothing
        yield dg.Output(qa_pairs, metadata=_table_metadata(qa_pairs, expectations_passed=len(outcomes)))


@dg.asset(group_name=GROUP, kinds={"pandas", "mlflow"})
def benchmark_splits(validated_qa_pairs, entity_catalog, mlubench_release: Release,
                     benchmark: BenchmarkSettings, mlflow: MLflowTracking):
    """The profile's selection (MLU_PROFILE), per task: forget/retain x train/eval, eval with its
    four paraphrase variants. Train never contains an (image, question) that eval asks.
    Logged to MLflow as datasets with their digest."""
    from mlu_training.data.splits import build_splits, log_splits, split_counts, splits_digest

    profile = benchmark.get_profile()
    splits = build_splits(validated_qa_pairs, entity_catalog, profile)
    digest = splits_digest(splits)
    run_id = log_splits(mlflow.store(), splits, profile, digest, mlubench_release.digest)
    return dg.Output(splits, metadata=_table_metadata(
        splits, profile=profile.name, data_digest=digest, num_entities=int(splits["entity_id"].nunique()),
        counts=_md(split_counts(splits)), mlflow_run_id=run_id,
    ))
