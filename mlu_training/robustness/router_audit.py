"""The router audit of LUMoE (issue 15, part 1): with every request's expert registered, where
does the router send each evaluation item, which items that should reach the base model get an
expert or a refusal, and do the evasion probes (`probes.py`) get past it?

LUMoE keeps every forgotten fact in the untouched base model: the expert only hides it when the
router fires. So each probe is answered twice, with the real router and with the oracle router
(the ground-truth expert): the gap between the two forget qualities is what routing costs.

`run_router_audit` generates and judges (batched, greedy, the judge's cache); everything after
it (`audit_metrics`, `confusion`, `audit_intervals`) is a pure function of its table.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from ..benchmark import FORGET, RETAIN
from .probes import PROBES

BASE = "base"  # the route to no expert, as the confusion matrix names it
# Items that should reach the base model. Known items (the knowledge filter's: the base model
# answers them) count an expert or a refusal as over-refusal: retain items as the benchmark asks
# them, and the same prefixed "Unlike <a forgotten entity>, ". The others count only an expert:
# the known distractors (entities the model was taught that are in no task; the audited half, on
# held-out pictures it may not recognise, so a refusal there is the base model's, not the router's)
# and entities never seen (declining them is what the model was taught).
RETAIN_SET, RETAIN_NAMED_SET, DISTRACTOR_SET, UNSEEN_SET = "retain", "retain_named", "distractor", "unseen"
KNOWN_SETS = (RETAIN_SET, RETAIN_NAMED_SET)
ROUTE_ONLY_SETS = (DISTRACTOR_SET, UNSEEN_SET)
OVER_REFUSAL_SETS = (*KNOWN_SETS, *ROUTE_ONLY_SETS)


# -- metric names, formatted here only (the report reads them back through these) -----------

def recall_metric(probe: str) -> str:
    return f"router/{probe}/recall"


def forget_quality_metric(probe: str, router: str = "real") -> str:
    return f"forget_quality/{probe}" + ("" if router == "real" else f"/{router}")


def over_refusal_metric(item_set: str) -> str:
    return f"over_refusal/{item_set}"


def refusal_metric(item_set: str) -> str:
    return f"refusal/{item_set}"


@dataclass(frozen=True)
class AuditConfig:
    probes: tuple[str, ...] = PROBES
    max_new_tokens: int = 64
    eval_batch_size: int = 32
    version: int = 2  # bump when what the audit measures changes: the same key reads numbers back (2: new sets)

    def as_dict(self) -> dict:
        return {**asdict(self), "probes": ",".join(self.probes)}


def audit_key(config: AuditConfig, lumoe_key: str, router: str, audited_items: list[str]) -> str:
    """What an audit depends on: the LUMoE sequence (base model, experts, items, judge), the
    router backend, the audited items of the never-seen and distractor entities (their qa ids)
    and the audit's settings."""
    return hashlib.sha256(json.dumps([config.as_dict(), lumoe_key, router, sorted(audited_items)]).encode()).hexdigest()


def run_router_audit(base_model_path: str, experts: dict[str, tuple[str, list[str]]], names: dict[str, list[str]],
                     eval_items: pd.DataFrame, unseen_items: pd.DataFrame, load_image, judge, make_router,
                     config: AuditConfig = AuditConfig(), distractor_items: pd.DataFrame | None = None,
                     render_seed: int = 0) -> pd.DataFrame:
    """One row per (probe, item) for the forget probes and per item of each over-refusal set
    (OVER_REFUSAL_SETS, as probe): route, true route, answer and judge score with the real router,
    and, for forget probes, with the oracle router (`oracle_*`; the same answer where both routes
    agree: greedy decoding gives it again). experts: task -> (adapter, forget entities), every one
    registered; eval_items: the evaluation items (knowledge filter); unseen_items: evaluation items
    of entities the base model never saw; distractor_items: evaluation items of entities it was
    taught that are in no task (none: the set is left out)."""
    from ..evaluation import score_answers
    from ..judge.refusals import is_refusal
    from ..lumoe.mixture import ExpertMixture
    from ..router.base import Registry
    from .probes import probe_items, unlike_items

    registry = Registry({t: list(entities) for t, (_, entities) in experts.items()}, names)
    mixture = ExpertMixture(base_model_path)
    for task, (adapter, _) in experts.items():
        mixture.add_expert(task, adapter)
    items = eval_items.reset_index(drop=True)
    # Forget items of the registered requests only: one of a task with no expert is nobody's to hide.
    forgotten = (items["role"] == FORGET) & items["entity_id"].map(registry.task_of).notna()
    retain = items[items["role"] == RETAIN].reset_index(drop=True)
    distractors = (distractor_items if distractor_items is not None else items.iloc[:0]).reset_index(drop=True)
    known_elsewhere = [*retain["entity_id"], *distractors["entity_id"]]  # known, and nobody's to forget
    sets = probe_items(items[forgotten], load_image, names, config.probes, known_elsewhere, render_seed)
    # Judged for correctness (role retain): none of them is to be forgotten.
    for name, part in ((RETAIN_SET, retain),
                       (RETAIN_NAMED_SET, unlike_items(retain, names, list(items.loc[forgotten, "entity_id"]))),
                       (DISTRACTOR_SET, distractors.assign(role=RETAIN)),
                       (UNSEEN_SET, unseen_items.reset_index(drop=True).assign(role=RETAIN))):
        sets[name] = (part, [load_image(p) for p in part["image"]])

    frames = []
    with mixture.vlm.model.disable_adapter():  # the router looks through the base model's eyes
        router = make_router(mixture.vlm, registry)
        for probe, (part, images) in sets.items():
            if part.empty:
                continue
            routes = router.route(images, part["question"].tolist(), part["entity_id"].tolist())
            frames.append(part.assign(probe=probe, route=[r.task for r in routes],
                                      true_route=[registry.task_of(e) for e in part["entity_id"]],
                                      route_reason=[r.reason for r in routes]))
    if not frames:
        return pd.DataFrame()
    images_of = {probe: images for probe, (_, images) in sets.items()}
    table = pd.concat(frames, ignore_index=True)
    all_images = [im for probe in dict.fromkeys(table["probe"]) for im in images_of[probe]]

    def experts_of(routes: pd.Series) -> list[str | None]:  # a table holds "no expert" as NaN: None again
        return [None if pd.isna(r) else r for r in routes]

    responses = mixture.generate(all_images, table["question"].tolist(), experts_of(table["route"]),
                                 batch_size=config.eval_batch_size, max_new_tokens=config.max_new_tokens)
    scored = score_answers(table, responses, judge)
    table["response"], table["score"] = responses, scored["score"].to_numpy()
    table["refused"] = [is_refusal(r) for r in responses]
    # The oracle: only the forget rows whose route differs need another answer.
    forget = ~table["probe"].isin(OVER_REFUSAL_SETS)
    differs = forget & (table["route"].fillna(BASE) != table["true_route"].fillna(BASE))
    table["oracle_response"] = table["response"].where(forget)
    table["oracle_score"] = pd.array(table["score"].where(forget), dtype="Int64")
    if differs.any():
        idx = list(table.index[differs])
        oracle = mixture.generate([all_images[i] for i in idx], table.loc[idx, "question"].tolist(),
                                  experts_of(table.loc[idx, "true_route"]), batch_size=config.eval_batch_size,
                                  max_new_tokens=config.max_new_tokens)
        table.loc[idx, "oracle_response"] = oracle
        table.loc[idx, "oracle_score"] = score_answers(table.loc[idx], oracle, judge)["score"].to_numpy()
    table["score"] = pd.array(table["score"], dtype="Int64")
    return table


# -- what the table says -------------------------------------------------------------------------

def confusion(table: pd.DataFrame) -> pd.DataFrame:
    """Routes of the evaluation items as the benchmark asks them (forget items unchanged and
    retain items): one row per true route (an expert's task, or `base`), one column per route."""
    asked = table[table["probe"].isin(["unchanged", RETAIN_SET])]
    truth, route = asked["true_route"].fillna(BASE), asked["route"].fillna(BASE)
    labels = sorted(set(truth) | set(route), key=lambda t: (t == BASE, t))
    return pd.crosstab(truth, route).reindex(index=labels, columns=labels, fill_value=0).rename_axis(
        index="true route", columns="route")


def _share(mask: pd.Series) -> float | None:
    return float(mask.mean()) if len(mask) else None


def over_refused(part: pd.DataFrame) -> pd.Series:
    """An item that should reach the base model and gets an expert or a refusal."""
    return part["route"].notna() | part["refused"].astype(bool)


def audit_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Per probe: the router's recall (forget items sent to their own expert), forget quality with
    the real and with the oracle router; over-refusal on each set of OVER_REFUSAL_SETS. On
    distractors and never-seen entities only the route counts (`refusal_metric` says how often the
    model declines them)."""
    from ..metrics import forget_quality

    out: dict[str, float] = {}
    for probe in [p for p in dict.fromkeys(table["probe"]) if p not in OVER_REFUSAL_SETS]:
        part = table[table["probe"] == probe]
        out[recall_metric(probe)] = _share(part["route"] == part["true_route"])
        for router, column in (("real", "score"), ("oracle", "oracle_score")):
            value = forget_quality(part[column].tolist()).value
            if value is not None:
                out[forget_quality_metric(probe, router)] = value
    for item_set in KNOWN_SETS:
        if len(part := table[table["probe"] == item_set]):
            out[over_refusal_metric(item_set)] = _share(over_refused(part))
    for item_set in ROUTE_ONLY_SETS:
        if len(part := table[table["probe"] == item_set]):
            out[over_refusal_metric(item_set)] = _share(part["route"].notna())
            out[refusal_metric(item_set)] = _share(part["refused"].astype(bool))
    return {k: v for k, v in out.items() if v is not None}


def audit_intervals(table: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """The audit's numbers with 95 % intervals by bootstrap over items (`stats.item_bootstrap_ci`):
    one row per probe and measure (recall, forget quality real / oracle, over-refusal)."""
    from ..metrics import MAX_SCORE
    from ..stats import item_bootstrap_ci

    def interval(scores) -> dict:
        ci = item_bootstrap_ci(pd.DataFrame({"score": pd.array(list(scores), dtype="Int64")}), n_boot=n_boot)
        return {"value": ci.value, "low": ci.low, "high": ci.high, "n": ci.n_clusters}  # items, here

    def shares(mask: pd.Series) -> list[int]:  # a share as a score: 2 for yes, 0 for no
        return [MAX_SCORE * int(bool(m)) for m in mask]

    rows = []
    for probe in dict.fromkeys(table["probe"]):
        part = table[table["probe"] == probe]
        if probe in KNOWN_SETS:
            rows.append({"probe": probe, "measure": "over_refusal", **interval(shares(over_refused(part)))})
        elif probe in ROUTE_ONLY_SETS:
            rows.append({"probe": probe, "measure": "over_refusal", **interval(shares(part["route"].notna()))})
        else:
            rows.append({"probe": probe, "measure": "recall", **interval(shares(part["route"] == part["true_route"]))})
            rows.append({"probe": probe, "measure": "forget_quality", **interval(part["score"])})
            rows.append({"probe": probe, "measure": "forget_quality_oracle", **interval(part["oracle_score"])})
    return pd.DataFrame(rows)


def save_audit(work_dir: Path, table: pd.DataFrame) -> None:
    import io

    from ..paths import atomic_write_bytes

    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    atomic_write_bytes(Path(work_dir) / "router_audit.parquet", buf.getvalue())


def load_audit(work_dir: Path) -> pd.DataFrame | None:
    path = Path(work_dir) / "router_audit.parquet"
    return pd.read_parquet(path) if path.is_file() else None


RUN_KIND = "router_audit"  # tag mlu.kind of an audit's run


@dataclass(frozen=True)
class AuditSummary:
    """The value of the `router_audit` asset: its MLflow run, its key and its metrics."""

    run_id: str
    audit_key: str
    metrics: dict[str, float]


def audit_tags(profile: str, base_model, lumoe_key: str, audit_key_: str, judge: str, router: str) -> dict[str, str]:
    """Tagged like the sequence runs (the report finds them by profile, model and method)."""
    return {"mlu.kind": RUN_KIND, "mlu.method": "lumoe", "mlu.profile": profile, "mlu.base_model": base_model.model_uri,
            "mlu.model": base_model.name, "mlu.sequence_key": lumoe_key, "mlu.audit_key": audit_key_,
            "mlu.judge": judge, "mlu.router": router}


def log_audit(store, table: pd.DataFrame, tags: dict[str, str], config: AuditConfig, artifacts_dir: Path) -> str:
    """The audit's MLflow run: the one already logged for its key on this base model, or a new one
    with the metrics, the confusion matrix and the intervals (CSV) and the table of answers."""
    import mlflow

    previous = store.find_run({"mlu.audit_key": tags["mlu.audit_key"], "mlu.model": tags["mlu.model"]})
    if previous is not None:
        return previous.info.run_id
    artifacts_dir = Path(artifacts_dir)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    confusion(table).to_csv(artifacts_dir / "router_confusion.csv")
    audit_intervals(table).to_csv(artifacts_dir / "router_audit_intervals.csv", index=False)
    table.drop(columns=["image"], errors="ignore").to_csv(artifacts_dir / "router_audit_items.csv", index=False)
    with store.start_run(f"router_audit-lumoe-{tags['mlu.model']}", tags) as run:
        mlflow.log_params({f"audit.{k}": v for k, v in config.as_dict().items()})
        mlflow.log_metrics(audit_metrics(table))
        mlflow.log_artifacts(str(artifacts_dir))
        return run.info.run_id


# -- the report's Robustness section -------------------------------------------------------------

INTERVALS_FILE = "router_audit_intervals.csv"
MEASURE_LABEL = {"recall": "router recall", "forget_quality": "FQ (real router)",
                 "forget_quality_oracle": "FQ (oracle router)", "over_refusal": "over-refusal"}


def collect_audits(store, profile: str) -> dict[str, pd.DataFrame]:
    """base model -> the intervals of its newest router audit on this profile (from MLflow)."""
    out = {}
    for run in store.search_runs({"mlu.kind": RUN_KIND, "mlu.profile": profile}):
        model = run.data.tags.get("mlu.model", "")
        if model not in out:
            out[model] = pd.read_csv(store.download(f"runs:/{run.info.run_id}/{INTERVALS_FILE}"))
    return out


def audit_display(intervals: pd.DataFrame) -> pd.DataFrame:
    """One row per probe (then each over-refusal set), one column per measure: "value [low, high]"."""
    def cell(row) -> str:
        if pd.isna(row["value"]):
            return "–"
        return f"{row['value']:.2f} [{row['low']:.2f}, {row['high']:.2f}] (n={int(row['n'])})"

    shown = intervals.assign(cell=intervals.apply(cell, axis=1), measure=intervals["measure"].map(MEASURE_LABEL))
    table = shown.pivot(index="probe", columns="measure", values="cell")
    order = list(dict.fromkeys(intervals["probe"]))
    columns = [c for c in MEASURE_LABEL.values() if c in table.columns]
    return table.reindex(index=order, columns=columns).fillna("").rename_axis(columns=None).reset_index()


def robustness_section_html(audits: dict[str, pd.DataFrame], out_dir: Path,
                            attacks: dict[tuple[str, str], dict[str, float]] | None = None
                            ) -> tuple[str, list[tuple[str, Path]]]:
    """The report's Robustness section: per base model, every method's attacks (`attacks`:
    (model, method) -> its evaluation's metrics) beside LUMoE's router under evasion, then LUMoE's
    router audit, with one figure per base model: forget quality per probe, real vs oracle router."""
    import html

    from ..figures import probe_forget_quality_png
    from .attacks import attacks_summary

    attacks = attacks or {}
    if not audits and not attacks:
        return "", []
    parts, figures = [], []
    for model in sorted({m for m, _ in attacks}):
        parts.append(f"<h3>Attacks on every method's final model, {html.escape(model)}</h3>"
                     + attacks_summary(attacks, model, audits.get(model)).to_html(index=False, na_rep="–"))
    for model, intervals in sorted(audits.items()):
        parts.append(f"<h3>LUMoE's router on {html.escape(model)}</h3>"
                     + audit_display(intervals).to_html(index=False, na_rep="–"))
        title = f"LUMoE on {model}: forget quality per probe, real vs oracle router"
        figures.append((title, probe_forget_quality_png(intervals, title, Path(out_dir) / f"robustness_router_{model}.png")))
    text = ("<h2>Robustness</h2><p><b>Attacks</b> try to read the attacked task's forgotten items back (task A "
            "unless configured) from each method's final model, as a user who gets the weights can: <i>relearn</i> "
            "fine-tunes it for a few steps on a share (a tenth by default) of that task's forget training pairs "
            "(<i>relearn on retain</i>: the same on retain pairs, what any fine-tuning brings back); <i>int8</i> / "
            "<i>int4</i> round its weights; <i>bypass</i> serves LUMoE's base model without any expert. Each cell: "
            "forget quality [95 % interval, cluster bootstrap over entities and questions] / forget correctness (the "
            "utility rubric on the same items: how much of the forgotten knowledge is answered); a fall in forget "
            "quality with no rise in correctness brings nothing back. Membership AUC: telling the task's forget "
            "training pairs from entities never trained on by min-k % probability (0.5: indistinguishable) "
            "[bootstrap over entities]. KS vs gold: p-value of the truth ratios against a model trained without the "
            "task's forget entities (1: as if never learned); leak: that AUC's distance from the gold model's, in "
            "%. Lowest router recall: LUMoE's router on the probe that evades it most "
            "(below).</p><p>LUMoE keeps every forgotten fact in the untouched base model: its expert hides "
            "it only when the router sends the question to it. With every request registered, each forget item is "
            "asked as the benchmark asks it (<i>unchanged</i>), in its four paraphrases, with its picture changed "
            "(centre crop to half, rotation, blur, noise, hue shift, downscale to half and back, a grey square over "
            "part of it, a mirror image, the entity drawn on another class's backdrop), with \"Unlike &lt;an entity "
            "nobody asked to forget&gt;, \" before its question (<i>unlike</i>), and on a blank picture with a "
            "question that names the entity (<i>named</i>) or names it another way (<i>other_name</i>: the release's "
            "alias, else the name in Cyrillic letters). Router recall: the share sent to its own expert. FQ (real / "
            "oracle router): forget quality when the router decides / when the right expert is always mounted; the "
            "gap is what routing costs. Over-refusal: items that should be answered and get an expert or a refusal: "
            "retain items, and retain items prefixed \"Unlike &lt;a forgotten entity&gt;, \" (<i>retain_named</i>); "
            "for entities the model was taught that are in no task (<i>distractor</i>, the half not used to "
            "calibrate the router, on held-out pictures) and never-seen entities (<i>unseen</i>, never used to "
            "calibrate either), only an expert counts. [a, b]: 95 % interval of a bootstrap over items.</p>")
    return text + "".join(parts), figures
