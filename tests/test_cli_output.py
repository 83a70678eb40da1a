"""`mlu run` prints its progress and the leaderboard, not Dagster's per-event DEBUG lines nor
known warnings; the events are still in the run's log. A real stage executed the way `mlu run`
executes each of its stages (execute_stage), in a process of its own, on a real instance."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

PROJECT = Path(__file__).resolve().parent.parent

STAGE = '''
import warnings
import dagster as dg
from mlu_assets.cli import execute_stage, quiet

quiet()

@dg.op
def noisy(context):
    context.log.info("an info line of the step")
    warnings.warn("`use_cache=True` is incompatible with gradient checkpointing", FutureWarning)
    warnings.warn("this API is in beta", dg.BetaWarning)
    return 1

@dg.job
def stage():
    noisy()

result = execute_stage(stage, dg.DagsterInstance.get(), None, {})
print("mlu: stage done", result.success, result.run_id)
'''


def test_a_stage_prints_nothing_of_its_events_and_keeps_them_in_the_run(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT / "dagster_home" / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONWARNINGS": "default"}
    out = subprocess.run([sys.executable, "-c", STAGE], env=env, cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    printed = out.stdout + out.stderr
    assert "mlu: stage done True" in out.stdout
    for noise in ("DEBUG", "STEP_START", "an info line", "FutureWarning", "BetaWarning", "gradient checkpointing"):
        assert noise not in printed, (noise, printed[:3000])
    assert len(printed.strip().splitlines()) == 1, printed
    run_id = out.stdout.split()[-1]
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        events = instance.all_logs(run_id)
        kinds = {e.dagster_event.event_type for e in events if e.dagster_event}
        assert {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.RUN_SUCCESS} <= kinds
        assert any(e.user_message == "an info line of the step" for e in events)


def test_the_main_job_runs_each_order_and_each_seed_with_one_set_of_experts_per_seed():
    from mlu_assets.cli import _batches, main_job_plan

    plan = main_job_plan("tiny", ["ga", "npo"], [0, 1], ["ga"], ["ABCD", "CABD"])
    unlearning = [s for s in plan if s.job == "unlearning_job"]
    configs = [s.run_config["ops"]["unlearning_sequence"]["config"] for s in unlearning]
    # ga alone twice (projector, vision tower), then each method x order, for each seed
    assert len(unlearning) == 2 + 2 * 2 * 2
    assert sorted((c["training"]["seed"], c["order"]) for c in configs if "targets" not in c["training"]) == \
        sorted([(seed, order) for seed in (0, 1) for order in ("ABCD", "CABD") for _ in ("ga", "npo")])
    assert {c["order"] for c in configs if "targets" in c["training"]} == {"ABCD"}  # the ablation: the paper's order
    assert len([s for s in plan if s.job == "lumoe_expert_job"]) == 4 * 2  # experts do not depend on the order
    lumoe = [s.run_config.get("ops", {}).get("lumoe_sequence", {}).get("config", {}).get("order")
             for s in plan if s.job == "lumoe_job"]
    assert lumoe == [None, "CABD", None, "CABD"]  # the paper's order: as the requests arrived
    batches = _batches(plan)
    # benchmark, base model | seed 0's baselines and experts side by side | its two LUMoE orders, alone | seed 1 … | report
    assert [len(b) for b in batches] == [1, 1, 2 + 4 + 4, 1, 1, 4 + 4, 1, 1, 1]
    assert all(s.side_by_side for s in batches[2]) and not batches[3][0].side_by_side


def test_each_base_model_seed_teaches_the_base_model_again_and_the_first_stays_last():
    from mlu_assets.cli import main_job_plan

    plan = main_job_plan("tiny", ["ga"], [0, 1], ["ga"], ["ABCD"], base_seeds=[3, 7])
    bases = [(i, s.run_config["ops"]["base_model"]["config"]["seed"]) for i, s in enumerate(plan)
             if s.job == "base_model_job"]
    assert [seed for _, seed in bases] == [7, 3]  # the first listed last: it stays the partition's base model
    on_7, on_3 = plan[bases[0][0] + 1:bases[1][0]], plan[bases[1][0] + 1:-1]
    for part, seed in ((on_7, 7), (on_3, 3)):
        assert all(f"(base seed {seed})" in s.what for s in part)
        assert len([s for s in part if s.job == "lumoe_expert_job"]) == 4 * 2  # each sequence seed's experts
    def targets(part):
        return [s.run_config["ops"]["unlearning_sequence"]["config"]["training"].get("targets") for s in part
                if s.job == "unlearning_job"]

    assert sorted(filter(None, targets(on_3))) == ["projector", "vision_tower"]  # the ablation: once, on base seed 3
    assert not any(targets(on_7))
    assert plan[-1].job == "report_job"
    assert main_job_plan("tiny", ["ga"], [0])[1].run_config == {}  # no base seeds: the Launchpad's default
