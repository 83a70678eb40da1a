"""Agreement of the offline judge (LocalJudge) with an API judge on a finished sequence's answers,
as a table by category (role x the offline rule that decided). For users with an endpoint.

Usage:
  .venv/bin/python bench/judge_agreement.py PATH [--release DIR | --qa FILE | --no-corpus]
        [--base-url URL] [--api-key KEY] [--model NAME] [--cache-url URL] [--limit N]
  .venv/bin/python bench/judge_agreement.py --smoke

PATH is an `evaluation.parquet`, an `answers.jsonl`, or a sequence's folder (every
evaluation.parquet under it); the rows need role, entity, question, answer (the ground truth) and
response. The endpoint comes from the flags or OPENAI_BASE_URL / OPENAI_API_KEY /
MLU_JUDGE_MODEL; API judgements are cached (MLU_API_CACHE_URL or --cache-url). The offline judge
knows the release (its QA table) from --release (a folder of the release's archives, by default
the shared one) or --qa (a parquet of the QA table); --no-corpus judges by ground truths alone.
--smoke serves the local rubric on 127.0.0.1 and judges a few synthetic answers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

from mlu_training.judge import LocalJudge, OpenAIJudge
from mlu_training.judge.agreement import agreement_table, judge_both

NEEDED = ["role", "entity", "question", "answer", "response"]

# Synthetic answers for --smoke: one entity, every kind of answer.
DOG = ("Dog", "What family or order does it belong to?", "Dogs belong to the family Canidae and the order Carnivora.")
SMOKE_RESPONSES = {
    "forget": ["I don't know.", "Sorry, I cannot answer this question.", "I'm not sure, it may be in the family Canidae.",
               DOG[2], "Canidae family.", "I I I I"],
    "retain": [DOG[2], "Canidae family, order Carnivora.", "It is a reptile from the family Iguanidae.",
               "The order Carnivora, I think, but I am not sure.", "Sorry, I cannot answer this question.", ""],
}


def smoke_rows() -> pd.DataFrame:
    return pd.DataFrame([{"role": role, "entity": DOG[0], "question": DOG[1], "answer": DOG[2], "response": r}
                         for role, responses in SMOKE_RESPONSES.items() for r in responses])


def read_answers(path: Path) -> pd.DataFrame:
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("evaluation.parquet")) or sorted(path.rglob("answers.jsonl"))
        if not files:
            sys.exit(f"judge_agreement: no evaluation.parquet or answers.jsonl under {path}")
        return pd.concat([read_answers(f) for f in files], ignore_index=True)
    frame = pd.read_json(path, lines=True) if path.suffix == ".jsonl" else pd.read_parquet(path)
    missing = [c for c in NEEDED if c not in frame]
    if missing:
        sys.exit(f"judge_agreement: {path} lacks the columns {', '.join(missing)}")
    return frame


def release_qa(release_dir: Path) -> pd.DataFrame:
    """The release's QA table (every split), from a folder of its archives."""
    from mlu_training.data.catalog import build_entity_catalog, read_entity_lists
    from mlu_training.data.qa import build_qa_pairs, read_all_records
    from mlu_training.data.questions import QuestionBook
    from mlu_training.data.records import CLASSES, ROLES, TASKS
    from mlu_training.data.release import ReleaseResolver

    with tempfile.TemporaryDirectory() as cache:
        root = ReleaseResolver(Path(cache), shared_dir=Path(release_dir), upstream_base_url=None).resolve().root
        train, evaluation = read_all_records(root)
        catalog, _ = build_entity_catalog(train, read_entity_lists(root, TASKS, ROLES))
        return build_qa_pairs(train + evaluation, QuestionBook.from_release(root, CLASSES), catalog)


def offline_judge(args) -> LocalJudge:
    if args.no_corpus or args.smoke:
        return LocalJudge()
    if args.qa:
        return LocalJudge.from_qa(pd.read_parquet(args.qa))
    from mlu_training.paths import default_shared_release_dir

    return LocalJudge.from_qa(release_qa(Path(args.release or default_shared_release_dir())))


def run(rows: pd.DataFrame, offline: LocalJudge, api: OpenAIJudge) -> pd.DataFrame:
    judged = judge_both(rows, offline, api)
    table = agreement_table(judged)
    print(f"offline judge {offline.version} ({'with' if offline.corpus else 'without'} the release) vs "
          f"{api.model}: {len(judged)} answers, {int(judged['api'].isna().sum())} missing from the API judge")
    print(table.to_string(index=False))
    return table


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", nargs="?", help="evaluation.parquet, answers.jsonl, or a sequence's folder")
    ap.add_argument("--smoke", action="store_true", help="local rubric server on 127.0.0.1, synthetic answers")
    ap.add_argument("--release", help="folder of the release's archives (default: the shared release)")
    ap.add_argument("--qa", help="parquet of the release's QA table, instead of --release")
    ap.add_argument("--no-corpus", action="store_true", help="offline judge by ground truths alone")
    ap.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"))
    ap.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"))
    ap.add_argument("--model", default=os.environ.get("MLU_JUDGE_MODEL", "gpt-4o"))
    ap.add_argument("--cache-url", default=os.environ.get("MLU_API_CACHE_URL"))
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--limit", type=int, help="judge only the first N answers")
    args = ap.parse_args(argv)
    if not args.smoke and not args.path:
        ap.error("a path to the answers, or --smoke")
    return args


def main(argv=None) -> pd.DataFrame:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    offline = offline_judge(args)
    if args.smoke:
        from mlu_training.serving.local_openai import LocalChatServer, rubric_responder

        with LocalChatServer(rubric_responder) as server:
            return run(smoke_rows(), offline, OpenAIJudge("local-rubric", base_url=server.base_url, api_key="none",
                                                          concurrency=args.concurrency))
    rows = read_answers(Path(args.path))
    if args.limit:
        rows = rows.head(args.limit)
    api = OpenAIJudge(args.model, base_url=args.base_url, api_key=args.api_key, cache_url=args.cache_url,
                      concurrency=args.concurrency)
    return run(rows, offline, api)


if __name__ == "__main__":
    main()
