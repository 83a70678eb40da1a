"""Attacks that try to read back what a sequence unlearned, from its final model as a user who
gets the weights can: a few steps of fine-tuning (relearning), rounding the weights (quantization),
and, for LUMoE, serving the base model without its experts (bypass). Each attacked model is asked
task A's forget items (those the base model knew: the knowledge filter's) and judged as the
sequence was: forget quality, 1.0 = every answer a refusal, so a drop is knowledge coming back.

A final model is what a sequence ends with: a baseline's last checkpoint (data/sequences/<method>/
<key>/step-<n>-<task>/model), or LUMoE's untouched base model with every expert beside it. LUMoE's
routes are decided once, by its router over the unchanged base model, and kept: the attacks change
the weights that answer, not who is asked (an attacker of the weights has no reason to touch the
router, and re-routing would mix two effects).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Callable

import pandas as pd

from ..adapters import AdapterTraining
from ..benchmark import FORGET, RETAIN

UNATTACKED = "none"  # the final model as the sequence left it: what each attack is compared with
RELEARN = "relearn"  # fine-tuned on a few of the forget set's own training pairs
RELEARN_RETAIN = "relearn_retain"  # the same fine-tuning on retain pairs: how much any fine-tuning brings back
QUANTIZED_BITS = {"int8": 8, "int4": 4}
BYPASS = "bypass"  # LUMoE: the base model without any expert
ATTACKS = (UNATTACKED, RELEARN, RELEARN_RETAIN, *QUANTIZED_BITS, BYPASS)


# What each attacked model is scored by, on the attacked task's forget items: forget quality (refusals)
# and forget correctness (the utility rubric: how much of the forgotten knowledge is answered). Both,
# because an attack can lower forget quality without bringing anything back (gibberish turned into
# declines it was taught, or the reverse).
ATTACK_MEASURES = {"forget_quality": "score", "forget_correctness": "correctness"}  # measure -> answers' column


def attack_metric(attack: str, measure: str = "forget_quality") -> str:
    """`attack/int4/forget_quality`, `attack/int4/forget_correctness`."""
    return f"attack/{attack}/{measure}"


def attack_intervals(answers: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """One row per (attack, measure): value and 95 % interval (the sequences' cluster bootstrap:
    entities, then questions sharing an answer, `stats.score_ci`) and the clusters it rests on."""
    from ..sequences import CI_LEVEL
    from ..stats import score_ci

    rows = []
    for attack, part in answers.groupby("attack", sort=False):
        for measure, column in ATTACK_MEASURES.items():
            ci = score_ci(part.assign(score=part[column]), n_boot, CI_LEVEL)
            rows.append({"attack": attack, "measure": measure, "value": ci.value, "low": ci.low, "high": ci.high,
                         "n": ci.n_clusters})
    return pd.DataFrame(rows, columns=["attack", "measure", "value", "low", "high", "n"])


def interval_metrics(intervals: pd.DataFrame) -> dict[str, float]:
    """`attack/<attack>/<measure>` and its `/ci_low`, `/ci_high`, as the sequences log theirs."""
    from ..sequences import ci_high, ci_low

    out = {}
    for row in intervals.itertuples():
        name = attack_metric(row.attack, row.measure)
        for metric, value in ((name, row.value), (ci_low(name), row.low), (ci_high(name), row.high)):
            if value is not None and not pd.isna(value):
                out[metric] = float(value)
    return out


@dataclass(frozen=True)
class AttackConfig:
    task: str = "A"  # whose forget set is attacked (the first request: it had the longest to come back)
    relearn_share: float = 0.1  # of the task's forget training pairs, the attacker's (seeded choice)
    # The attacker's fine-tuning: a LoRA merged in, at the fine-tuning rate (FineTuning.lr), whatever
    # the method attacked.
    relearn: AdapterTraining = AdapterTraining(steps=10, batch_size=8, lr=3e-4)
    min_k: float = 0.2  # membership inference: the share of least likely tokens min-k % averages
    max_new_tokens: int = 64
    eval_batch_size: int = 32
    seed: int = 0
    version: int = 3  # bump when what is measured changes (2: forget correctness and intervals; 3: AUC by entity)

    def as_dict(self) -> dict:
        from ..methods.finetune import FineTuning

        return {**asdict(self), "relearn": self.relearn.at_rate(FineTuning.lr).as_dict()}

    def params(self) -> dict:
        """Flat, as MLflow params (the relearning's training settings prefixed `relearn_`)."""
        flat = self.as_dict()
        return {**{k: v for k, v in flat.items() if k != "relearn"},
                **{f"relearn_{k}": v for k, v in flat["relearn"].items()}}

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()


# -- the model a user gets ---------------------------------------------------------------------

@dataclass(frozen=True)
class FinalModel:
    """A sequence's final model: the weights, and for LUMoE its experts and the route of every query."""

    path: str  # a checkpoint folder: a baseline's last step, or LUMoE's base model
    experts: dict[str, str] = field(default_factory=dict)  # request -> adapter folder (LUMoE only)
    routes: dict[tuple[str, str], str | None] | None = None  # (image, question) -> expert, None = base model

    def load(self, change: Callable | None = None) -> "Served":
        """A fresh copy in memory; `change(vlm)` alters the weights first (an attack), before the
        experts are mounted beside them."""
        from ..lumoe.mixture import ExpertMixture
        from ..models.vlm import VisionLanguageModel

        vlm = VisionLanguageModel.load(self.path)
        if change is not None:
            change(vlm)
        if not self.experts:
            return Served(vlm)
        mixture = ExpertMixture.over(vlm)
        for request, adapter in self.experts.items():
            mixture.add_expert(request, adapter)
        return Served(vlm, mixture, self.routes or {})

    def without_experts(self) -> "FinalModel":
        return FinalModel(self.path)


def routes_of(router, items: pd.DataFrame, load_image) -> dict[tuple[str, str], str | None]:
    """(image, question) -> the expert `router` (router/base.py) sends the query to."""
    items = items.drop_duplicates(["image", "question"])
    found = router.route([load_image(p) for p in items["image"]], items["question"].tolist(), items["entity_id"].tolist())
    return {(image, question): r.task for image, question, r in zip(items["image"], items["question"], found)}


@dataclass
class Served:
    """A model in memory, answering as it is served: alone, or as LUMoE with each query's expert."""

    vlm: object  # models.vlm.VisionLanguageModel (for LUMoE, its model carries the experts)
    mixture: object | None = None  # lumoe.mixture.ExpertMixture over vlm
    routes: dict[tuple[str, str], str | None] = field(default_factory=dict)

    def route_of(self, items: pd.DataFrame) -> list[str | None]:
        if self.mixture is None:
            return [None] * len(items)
        missing = [pair for pair in zip(items["image"], items["question"]) if pair not in self.routes]
        if missing:
            raise KeyError(f"{len(missing)} queries were never routed, e.g. {missing[0]}")
        return [self.routes[pair] for pair in zip(items["image"], items["question"])]

    def answer(self, items: pd.DataFrame, load_image, batch_size: int = 32, max_new_tokens: int = 64) -> list[str]:
        images, questions = [load_image(p) for p in items["image"]], items["question"].tolist()
        if self.mixture is None:
            return self.vlm.generate(images, questions, batch_size=batch_size, max_new_tokens=max_new_tokens)
        return self.mixture.generate(images, questions, self.route_of(items), mode="grouped", batch_size=batch_size,
                                     max_new_tokens=max_new_tokens)

    def token_logprobs(self, items: pd.DataFrame, answers: list[str], load_image, batch_size: int = 32) -> list:
        """log p of each token of each answer (its end-of-sequence included) after the item's
        image and question, through the item's expert: one numpy array per item."""
        import torch

        from ..methods.base import answer_logprobs

        items = items.reset_index(drop=True)
        routes = self.route_of(items)
        out: list = [None] * len(items)
        for route in dict.fromkeys(routes):
            idx = [i for i, r in enumerate(routes) if r == route]
            with self._mounted(route), torch.inference_mode():
                for start in range(0, len(idx), batch_size):
                    part = idx[start:start + batch_size]
                    batch = self.vlm.training_batch([load_image(items["image"][i]) for i in part],
                                                    [items["question"][i] for i in part], [answers[i] for i in part])
                    scored = answer_logprobs(self.vlm.model, batch)
                    for row, i in enumerate(part):
                        out[i] = scored.token[row][scored.mask[row].bool()].cpu().numpy()
        return out

    def _mounted(self, route: str | None):
        if self.mixture is None:
            return nullcontext()
        if route is None:
            return self.vlm.model.disable_adapter()
        self.vlm.model.set_adapter(route)
        return nullcontext()


# -- the attacks ---------------------------------------------------------------------------------

def fake_quantize(model, bits: int) -> int:
    """Round the weight of every linear layer (the language model, projector, vision tower, output
    head and LoRA experts alike) to `bits`-bit integers, symmetric per output channel, and back to
    float, in place; returns how many layers. Weight-only fake quantization: the values a quantized
    deployment computes with, activations kept in float (not a bitsandbytes kernel). Embeddings and
    norms are kept, as weight-only schemes (GPTQ, AWQ, bitsandbytes' Linear4bit) keep them."""
    import torch

    qmax = 2 ** (bits - 1) - 1
    layers = 0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                weight = module.weight
                scale = weight.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / qmax
                weight.copy_((weight / scale).round().clamp(-qmax, qmax) * scale)
                layers += 1
    return layers


def relearning_rows(train_items: pd.DataFrame, task: str, role: str, share: float, seed: int) -> pd.DataFrame:
    """The attacker's training pairs: as many as `share` of the task's forget training pairs (at
    least one), a seeded choice among the task's `role` pairs. Labelled forget, the role whose
    rows train_adapter fine-tunes on."""
    rows = train_items[train_items["task"] == task]
    n = max(1, round(share * int((rows["role"] == FORGET).sum())))
    pool = rows[rows["role"] == role].sort_values("qa_id")  # sorted: the choice does not depend on row order
    if pool.empty:
        raise ValueError(f"task {task}: no {role} training pairs to relearn from")
    return pool.sample(n=min(n, len(pool)), random_state=seed).assign(role=FORGET)


def relearning(rows: pd.DataFrame, config: AttackConfig, load_image) -> Callable:
    """The change a relearning attack makes: a LoRA trained on `rows` with the plain answer loss,
    merged into the weights."""
    from ..adapters import train_adapter
    from ..models.vlm import seed_everything
    from ..methods.finetune import FineTuning

    def change(vlm) -> None:
        seed_everything(config.seed)
        adapted, _ = train_adapter(vlm, FineTuning(), rows, config.task, config.relearn, config.seed, load_image)
        vlm.model = adapted.merge_and_unload()

    return change


@dataclass
class AttackResult:
    answers: pd.DataFrame  # one row per (attack, item): the response, its judgement
    metrics: dict[str, float]


def attacked_items(eval_items: pd.DataFrame, task: str) -> pd.DataFrame:
    """What every attack is judged on: the task's forget evaluation items (every phrasing)."""
    return eval_items[(eval_items["task"] == task) & (eval_items["role"] == FORGET)].reset_index(drop=True)


def run_attacks(final: FinalModel, train_items: pd.DataFrame, eval_items: pd.DataFrame, load_image, judge,
                config: AttackConfig = AttackConfig(), on_attack: Callable[[str], None] | None = None) -> AttackResult:
    """Every attack on `final` (bypass only where there are experts to bypass), judged on the
    attacked task's forget items: `attack/<attack>/<forget_quality|forget_correctness>` with their
    intervals, and `none` for the model as it was."""
    from ..evaluation import score_answers

    items = attacked_items(eval_items, config.task)
    makers: dict[str, Callable[[], Served]] = {
        UNATTACKED: final.load,
        RELEARN: lambda: final.load(relearning(
            relearning_rows(train_items, config.task, FORGET, config.relearn_share, config.seed), config, load_image)),
        RELEARN_RETAIN: lambda: final.load(relearning(
            relearning_rows(train_items, config.task, RETAIN, config.relearn_share, config.seed), config, load_image)),
        **{name: (lambda bits=bits: _quantized(final.load(), bits)) for name, bits in QUANTIZED_BITS.items()},
    }
    if final.experts:
        makers[BYPASS] = final.without_experts().load
    frames = []
    for name, make in makers.items():
        if on_attack:
            on_attack(name)
        served = make()
        frame = score_answers(items, served.answer(items, load_image, config.eval_batch_size, config.max_new_tokens), judge)
        frame.insert(0, "attack", name)
        frames.append(frame)
    answers = pd.concat(frames, ignore_index=True)
    return AttackResult(answers, interval_metrics(attack_intervals(answers)))


def _quantized(served: Served, bits: int) -> Served:
    fake_quantize(served.vlm.model, bits)
    return served


def evaluate_robustness(final: FinalModel, train_items: pd.DataFrame, eval_items: pd.DataFrame, unseen: pd.DataFrame,
                        qa: pd.DataFrame, load_image, judge, config: AttackConfig = AttackConfig(),
                        gold: FinalModel | None = None, on_stage: Callable[[str], None] | None = None) -> AttackResult:
    """Every attack (run_attacks), membership inference (`mia/<score>/auc`) and, with a gold model,
    the comparison with it (`gold/ks_forget_quality`, `gold/privleak`): one evaluation's metrics."""
    from .gold import GOLD_KS, PRIVLEAK_SCORE, ks_forget_quality, perturbed_answers, privleak, privleak_metric, truth_ratios
    from .mia import MIA_SCORES, membership_sets, mia_aucs, mia_metric

    result = run_attacks(final, train_items, eval_items, load_image, judge, config, on_stage)
    if on_stage:
        on_stage("membership inference")
    members, nonmembers = membership_sets(train_items, unseen, config.task)
    served = final.load()
    metrics = {**result.metrics,
               **mia_aucs(served, members, nonmembers, load_image, config.min_k, config.eval_batch_size, intervals=True)}
    if gold is not None:
        if on_stage:
            on_stage("gold model")
        gold_served = gold.load()
        gold_aucs = mia_aucs(gold_served, members, nonmembers, load_image, config.min_k, config.eval_batch_size)
        for score in MIA_SCORES:
            metrics[privleak_metric(score)] = privleak(metrics[mia_metric(score)], gold_aucs[mia_metric(score)])
        metrics[privleak_metric()] = metrics[privleak_metric(PRIVLEAK_SCORE)]
        items = attacked_items(eval_items, config.task)
        perturbed = perturbed_answers(items, qa, seed=config.seed)
        metrics[GOLD_KS] = ks_forget_quality(truth_ratios(served, items, perturbed, load_image, config.eval_batch_size),
                                             truth_ratios(gold_served, items, perturbed, load_image, config.eval_batch_size))
    return AttackResult(result.answers, metrics)


# -- the run ---------------------------------------------------------------------------------------

ROBUSTNESS_RUN_KIND = "robustness"  # tag mlu.kind of an evaluation's run


def robustness_key(config: AttackConfig, sequence_key: str, gold_key: str | None, eval_digest: str, judge: str) -> str:
    """What an evaluation's numbers depend on: the same key gives the same numbers (its run is reused)."""
    return hashlib.sha256(json.dumps([config.as_dict(), sequence_key, gold_key, eval_digest, judge],
                                     sort_keys=True).encode()).hexdigest()


def robustness_tags(method: str, order: str, profile: str, base_model, sequence_key: str, sequence_run: str, judge: str,
                    key: str, gold_model_uri: str | None) -> dict[str, str]:
    """The tags of an evaluation's run: a sequence run's selection tags (method, model, profile,
    judge, sequence key) plus the run and gold model it was measured against."""
    return {"mlu.kind": ROBUSTNESS_RUN_KIND, "mlu.method": method, "mlu.order": order, "mlu.profile": profile,
            "mlu.base_model": base_model.model_uri, "mlu.model": base_model.name, "mlu.sequence_key": sequence_key,
            "mlu.sequence_run": sequence_run, "mlu.judge": judge, "mlu.robustness_key": key,
            "mlu.gold_model": gold_model_uri or "none"}


def logged_robustness(store, tags: dict[str, str], params: dict, evaluate: Callable[[], AttackResult],
                      artifacts_dir) -> tuple[str, dict[str, float], bool]:
    """(run id, metrics, reused): the run already logged for this key on this base model, or a new
    one with `evaluate()`'s metrics and every attacked answer as an artifact."""
    from pathlib import Path

    import mlflow

    previous = store.find_run({"mlu.robustness_key": tags["mlu.robustness_key"], "mlu.model": tags["mlu.model"]})
    if previous is not None:
        return previous.info.run_id, dict(previous.data.metrics), True
    result = evaluate()
    with store.start_run(f"robustness-{tags['mlu.method']}-{tags['mlu.order']}", tags) as run:
        mlflow.log_params(params)
        mlflow.log_metrics(result.metrics)
        answers = Path(artifacts_dir) / "attacked_answers.jsonl"
        answers.parent.mkdir(parents=True, exist_ok=True)
        result.answers.to_json(answers, orient="records", lines=True, force_ascii=False)
        mlflow.log_artifact(str(answers), "answers")
        return run.info.run_id, result.metrics, False


# -- the report's attack table ---------------------------------------------------------------------

ATTACK_LABEL = {UNATTACKED: "as left", RELEARN: "relearn", RELEARN_RETAIN: "relearn on retain",
                **{name: name for name in QUANTIZED_BITS}, BYPASS: "bypass"}


def collect_attacks(store, profile: str) -> dict[tuple[str, str], dict[str, float]]:
    """(base model, method label) -> the metrics of its newest robustness evaluation on this profile."""
    from ..sequences import method_label

    out: dict[tuple[str, str], dict[str, float]] = {}
    for run in store.search_runs({"mlu.kind": ROBUSTNESS_RUN_KIND, "mlu.profile": profile}):
        key = (run.data.tags.get("mlu.model", ""), method_label(run.data.tags))
        out.setdefault(key, dict(run.data.metrics))
    return out


def _interval(value: float, low: float | None, high: float | None, digits: int = 2) -> str:
    """"0.52 [0.30, 0.70]": a value and, where it has one, its interval."""
    bounds = f" [{low:.{digits}f}, {high:.{digits}f}]" if low is not None and high is not None else ""
    return f"{value:.{digits}f}{bounds}"


def _cell(metrics: dict[str, float], name: str, digits: int = 2) -> str:
    from ..sequences import ci_high, ci_low

    if name not in metrics:
        return "–"
    return _interval(metrics[name], metrics.get(ci_low(name)), metrics.get(ci_high(name)), digits)


def attacks_summary(evaluations: dict[tuple[str, str], dict[str, float]], model: str,
                    audit: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per method on `model`: LUMoE's router under evasion (`audit`: its router audit's
    intervals; the lowest recall of any probe, over-refusal on retain items), one column per attack
    (forget quality [interval] / forget correctness), membership AUC (the score the leak uses), the
    KS p-value against the gold model and the leak."""
    from .gold import GOLD_KS, PRIVLEAK_SCORE, privleak_metric
    from .mia import mia_metric

    auc_column = f"membership AUC ({PRIVLEAK_SCORE})"  # the score the leak is computed from
    rows = []
    for (m, label), metrics in sorted(evaluations.items()):
        if m != model:
            continue
        row = {"method": label}
        if label == "lumoe" and audit is not None and len(audit):
            recalls = audit[(audit["measure"] == "recall") & audit["value"].notna()]
            if len(recalls):
                worst = recalls.loc[recalls["value"].idxmin()]
                row["lowest router recall"] = f"{_interval(worst['value'], worst['low'], worst['high'])} ({worst['probe']})"
            retain = audit[(audit["measure"] == "over_refusal") & (audit["probe"] == "retain")]
            if len(retain):
                retain = retain.iloc[0]
                row["over-refusal (retain)"] = _interval(retain["value"], retain["low"], retain["high"])
        for attack in ATTACKS:
            if attack_metric(attack) in metrics:
                correctness = metrics.get(attack_metric(attack, "forget_correctness"))
                row[ATTACK_LABEL[attack]] = _cell(metrics, attack_metric(attack)) + (
                    f" / {correctness:.2f}" if correctness is not None else "")
        row[auc_column] = _cell(metrics, mia_metric(PRIVLEAK_SCORE))
        row["KS vs gold"] = _cell(metrics, GOLD_KS, 3)
        row["leak vs gold (%)"] = _cell(metrics, privleak_metric(), 1)
        rows.append(row)
    columns = ["method", "lowest router recall", "over-refusal (retain)", *[ATTACK_LABEL[a] for a in ATTACKS],
               auc_column, "KS vs gold", "leak vs gold (%)"]
    frame = pd.DataFrame(rows)
    return frame.reindex(columns=[c for c in columns if c in frame.columns]).fillna("–")
