"""Every bench runs, in its smoke mode, on a finished tiny run: so that none can rot unnoticed.
Smoke runs measure nothing worth reading (a few items, one repeat); they check that both sides of
each comparison run and agree where the bench says they must."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run_bench(script: str, finished_run, *extra: str) -> str:
    env = {**os.environ, "MLFLOW_TRACKING_URI": finished_run["tracking_uri"], "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(BENCH / script), "--smoke", "--data-dir", str(finished_run["data_dir"]),
                          *extra], capture_output=True, text=True, env=env, cwd=BENCH, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_generation_bench_gives_the_reference_tokens(finished_run):
    out = run_bench("generation.py", finished_run)
    same, total = map(int, re.search(r"identical outputs: (\d+)/(\d+)", out).groups())
    assert total == 8 and same == total, out  # batched greedy decoding = one generate call per item
    assert float(re.search(r"speed-up: ([\d.]+)x", out).group(1)) > 0
    ours, reference = (float(re.search(rf"{side}.*?([\d.]+) s ", out).group(1)) for side in ("ours", "reference"))
    speed_up = float(re.search(r"speed-up: ([\d.]+)x", out).group(1))  # the ratio of the two times it printed
    assert (reference - 0.005) / (ours + 0.005) - 0.05 <= speed_up <= (reference + 0.005) / max(ours - 0.005, 1e-9) + 0.05
    # The previous decoding loop (cache grown by concatenation) gives the same tokens (counted in
    # `identical outputs`), its ratio is that of the times printed, and the decoding rate is a
    # share of a matmul rate measured in the same run.
    previous = float(re.search(r"previous loop .*?([\d.]+) s ", out).group(1))
    over = float(re.search(r"over the previous loop: ([\d.]+)x", out).group(1))
    assert (previous - 0.005) / (ours + 0.005) - 0.005 <= over <= (previous + 0.005) / max(ours - 0.005, 1e-9) + 0.005
    shares = re.findall(r"decoding GFLOP/s, (ours|previous): ([\d.]+) = (\d+) % .* \(([\d.]+) GFLOP/s\)", out)
    assert [side for side, *_ in shares] == ["ours", "previous"], out
    for _, achieved, share, rate in shares:
        assert float(rate) > 0 and abs(100 * float(achieved) / float(rate) - int(share)) <= 1 + 100 * 0.05 / float(rate)


def test_unlearning_bench_accounts_for_the_time(finished_run):
    out = run_bench("unlearning.py", finished_run)
    shares = [float(s) for s in re.findall(r"(\d+\.\d) %", out)]
    assert len(shares) == 4 and sum(shares) == pytest.approx(100, abs=0.5), out
    assert "2 optimisation steps" in out  # smoke: two tasks, one step each
    measured = json.loads(out.strip().splitlines()[-1])  # the shares, from the marks the sequence itself set
    parts = [measured[k] for k in ("train_share", "generation_share", "judge_share")]
    assert all(p > 0 for p in parts) and sum(parts) <= 1.0, measured  # and "loading, other" is not negative
    assert measured["seconds_per_step"] > 0


def test_unlearning_bench_compares_batches_and_the_reference_side_by_side(finished_run):
    out = run_bench("unlearning.py", finished_run, "--no-sequence")
    measured = json.loads(out.strip().splitlines()[-1])
    training = measured["training"]
    assert set(training) == {"ga", "npo", "kl", "po"} and "seconds_per_step" not in measured, out
    assert set(training["ga"]["seconds_per_step"]) == {"padded", "grouped", "packed+cached"}  # no reference to cache
    for method in ("npo", "kl", "po"):  # the cached reference gives the losses of recomputing it
        assert set(training[method]["seconds_per_step"]) == {"padded", "grouped", "grouped+cached", "packed+cached"}
        assert training[method]["same_losses"] is True, out
    for sides in training.values():  # the same rows packed: the padded losses, up to float rounding
        assert sides["packed_loss_drift"] < 1e-4, out
    for method, sides in training.items():  # a smoke run's few rows say nothing of padding: only that it is counted
        assert all(0 < share <= 1 for share in sides["real_tokens"].values()) and sides["speed_up"] > 0, (method, sides)
    assert out.count("same losses") == 3 and "DIFFER" not in out, out
    assert measured["po_passes"]["same_loss"] is True and "po, one step's loss" in out, out


def test_judge_bench_makes_no_call_on_a_cached_rerun(finished_run):
    out = run_bench("judge.py", finished_run)
    assert re.search(r"ours: .* 12 calls, 0 failed", out), out
    assert "cached rerun:" in out and re.search(r"cached rerun: [\d.]+ s, 0 calls, 0 missing", out), out


def test_lumoe_bench_serves_the_reference_answers(finished_run):
    out = run_bench("lumoe.py", finished_run)
    assert re.search(r"8 items, 2 experts", out), out
    assert re.search(r"same answers 4/4", out), out  # grouped routing = a deep copy per adapter
    plain, cached = map(int, re.search(r"at every step (\d+) answers .* cached (\d+) ", out).groups())
    assert plain == 2 * 8 and cached < plain, out  # 8 items after each of 2 requests; an answer is given once
    assert "same evaluations: True" in out, out


def test_under_load_bench_compares_both_wait_policies(finished_run):
    out = run_bench("under_load.py", finished_run)
    slowdowns = re.findall(r"^(ours|runtime default).*alone +([\d.]+) s .*busy process +([\d.]+) s +slowdown +([\d.]+)x",
                           out, re.MULTILINE)
    assert [s[0] for s in slowdowns] == ["ours", "runtime default"], out
    for _, alone, busy, slowdown in slowdowns:  # the ratio of the two times it printed, rounded as printed
        half_unit = 0.5 * 10 ** -len(alone.split(".")[1]) if "." in alone else 0.5
        # every ratio the unrounded times could have had (smoke times are tenths of a second, so
        # the first-order error bound is too tight: 0.8 / 0.4 printed may be 0.85 / 0.35)
        lowest = (float(busy) - half_unit) / (float(alone) + half_unit)
        highest = (float(busy) + half_unit) / max(float(alone) - half_unit, 1e-9)
        assert lowest - 0.01 <= float(slowdown) <= highest + 0.01, out
    assert "identical answers on every side: True" in out  # the wait policy changes time, never tokens


def test_base_model_bench_packs_the_same_batches_with_the_same_loss(finished_run):
    out = run_bench("base_model.py", finished_run)
    measured = json.loads(out.strip().splitlines()[-1])
    assert measured["steps"] == 2 and measured["batch_size"] == 4
    cells = measured["token_cells"]
    assert measured["real_tokens"] <= cells["packed"] <= cells["padded"], out  # packing never computes more
    assert measured["loss_gap"] < 1e-4 and measured["grad_gap"] < 1e-4, out  # the same loss, up to rounding
    seconds = measured["seconds_per_step"]
    assert measured["speed_up"] == pytest.approx(seconds["padded"] / seconds["packed"], rel=1e-6)


# What the GPU machine lacks: the orchestration's libraries (bench/gpu.py runs with torch and the
# Hugging Face stack only).
NOT_ON_THE_DEVICE = ("dagster", "mlflow", "great_expectations", "trl", "openai", "sqlalchemy")


def run_without_orchestration(*args: str) -> subprocess.CompletedProcess:
    """bench/gpu.py in a process where none of NOT_ON_THE_DEVICE can be imported (a None in
    sys.modules makes `import name` and `import name.sub` raise ImportError)."""
    code = ("import runpy, sys; sys.modules.update(dict.fromkeys({blocked!r})); sys.argv = {argv!r}; "
            "runpy.run_path({path!r}, run_name='__main__')").format(
        blocked=NOT_ON_THE_DEVICE, argv=["gpu.py", *args], path=str(BENCH / "gpu.py"))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=BENCH, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_gpu_bench_runs_every_stage_without_the_orchestration_libraries(finished_run, tmp_path):
    data, out = tmp_path / "inputs", tmp_path / "gpu.json"
    prepared = run_without_orchestration("--prepare", str(finished_run["data_dir"]), "--data-dir", str(data),
                                         "--profile", "tiny")
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    assert not (data / "images").exists()  # tables only: every picture is rendered again, and checked
    run = run_without_orchestration("--smoke", "--profile", "tiny", "--data-dir", str(data), "--out", str(out),
                                    "--work-dir", str(tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(out.read_text())
    stages = result["stages"]
    assert list(stages) == ["render", "base_model", "knowledge_filter", "ga_sequence", "generation"], run.stdout
    assert all(s["ok"] for s in stages.values()), {n: s.get("error") for n, s in stages.items()}
    assert "gpu bench, profile tiny (smoke)" in run.stdout and "FAILED" not in run.stdout

    tables = finished_run["data_dir"] / "tables"
    crawls = pd.read_parquet(tables / "raw_crawls.parquet")
    reference = json.loads((data / "cpu_reference.json").read_text())
    assert set(reference["pixel_sha256"]) == set(crawls["image"]) and reference["manifest"]["sft"]["steps"] == 120
    render = stages["render"]
    assert render["pictures"] == render["rendered"] == len(crawls) and render["reused"] == 0  # same bytes as the run's
    assert render["png_differs_pixels_same"] == 0

    base = stages["base_model"]
    assert base["steps"] == base["steps_done"] == 2 and base["batch_size"] == 4 and base["recipe_from"] == "CPU manifest"
    assert base["trained_on"] == "cpu" and base["weights_dtype"] == "float32" and base["autocast"] is False
    assert 0 < base["answer_tokens_per_second"] < base["tokens_per_second"] <= base["token_cells_per_second"]
    assert base["real_token_share"] == pytest.approx(base["tokens_per_second"] / base["token_cells_per_second"])
    assert 0 < base["batch_building_share"] < 1 and base["mfu"]["achieved_tflops"] > 0
    assert "cpu_final_loss" not in base  # two steps say nothing of the loss the recipe reaches

    known = stages["knowledge_filter"]
    splits = pd.read_parquet(tables / "benchmark_splits.parquet")
    n_items = len(splits[splits["split"] == "eval"].groupby(["task", "role"]).head(2))
    assert known["items"] == n_items and 0 <= known["kept"] <= n_items == known["calibration"]["refusal_known_items"]
    assert sum(known["kept_per_task"].values()) == known["kept"] and known["missing_judgements"] == 0
    assert known["cpu_kept"] == len(pd.read_parquet(tables / "knowledge_filter" / "tiny.parquet"))
    assert known["dtype"] == "float32" and "fp32_check" not in known  # served in float32 already

    ga = stages["ga_sequence"]
    assert len(ga["order"]) == 2 and [s["task"] for s in ga["steps"]] == list(ga["order"])
    if known["kept"]:
        assert ga["eval_items"] == known["kept"] and ga["kept_from"] == "this run's knowledge filter"
    else:  # two steps teach nothing: the sequence runs on what the run's base model knew (every item here)
        assert ga["eval_items"] == n_items and ga["kept_from"] == "the CPU run's (this run's kept none)"
    task = f"task_{ga['order'][0]}"
    assert set(ga[task]) == {"forget_quality", "utility", "forget_correctness"}
    assert all(len(values) == 2 for values in ga[task].values())
    for step in ga["steps"]:  # float32 weights: merging keeps all of the update
        assert step["merge"]["lost_share"] == 0 and step["merge"]["backbone_dtype"] == "float32", step
        assert step["merge"]["update_over_weights"] > 0 and step["train_seconds"] > 0 and step["evaluate_seconds"] > 0

    gen = stages["generation"]
    assert gen["items"] == 8 and 0 < gen["generated_tokens"] <= 8 * gen["max_new_tokens"]
    assert gen["tokens_per_second"] == pytest.approx(gen["generated_tokens"] / gen["generate_seconds"], rel=1e-3)
    assert result["environment"]["device"] == "cpu" and result["total_seconds"] >= sum(s["seconds"] for s in stages.values())


def test_the_budget_ladder_runs_the_first_request_at_each_rate(finished_run):
    script = BENCH.parent / "scripts" / "choose_budgets.py"
    env = {**os.environ, "MLFLOW_TRACKING_URI": finished_run["tracking_uri"], "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(script), "--smoke", "--data-dir", str(finished_run["data_dir"]),
                          "--methods", "ga,idk", "--rates", "3e-4,1e-2"], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    rows = result["rows"]
    assert result["steps"] == 2 and sorted((r["method"], r["rate"]) for r in rows) == [
        ("ga", 3e-4), ("ga", 1e-2), ("idk", 3e-4), ("idk", 1e-2)]
    assert all(0 <= r[k] <= 1 for r in rows for k in ("forget_correctness", "forget_quality", "utility"))
    for method, chosen in result["chosen"].items():  # the smallest rate that leaves at most half answered
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["rate"])
        assert chosen == next((r["rate"] for r in mine if r["forget_correctness"] <= 0.5), None)
        assert f"  {method} " in out.stdout


def test_the_renderer_tradeoff_teaches_a_base_model_per_variant(finished_run):
    script = BENCH.parent / "scripts" / "renderer_tradeoff.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(script), "--smoke", "--data-dir", str(finished_run["data_dir"]),
                          "--variants", "shapes-v1,posed-views8-1500"], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    v1, posed = json.loads(out.stdout.strip().splitlines()[-1])["rows"]
    assert (v1["renderer"], v1["views"], posed["renderer"], posed["views"]) == ("shapes-v1", 1, "posed", 8)
    assert v1["steps"] == posed["steps"] == 2 and v1["entities"] == posed["entities"] == 6
    assert v1["pixel_centroid_names"] == 1.0 > posed["pixel_centroid_names"]  # the smoke's 6 entities
    for row in (v1, posed):
        assert 0 <= row["kept"] <= row["items"] and 0 <= row["refusal_unseen"] <= 1 and 0 <= row["refusal_known"] <= 1
    assert "posed-views8-1500 | " in out.stdout
    bad = subprocess.run([sys.executable, str(script), "--smoke", "--variants", "sepia"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert bad.returncode != 0 and "no variant sepia" in bad.stderr
