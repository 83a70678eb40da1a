"""The code location loads, stays light, and takes its settings from the environment."""

import os
import subprocess
import sys

import dagster as dg

from mlu_training.data.validation import check_names

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_definitions_load():
    from mlu_assets.definitions import defs

    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"mlubench_release", "entity_catalog", "qa_pairs", "raw_crawls", "validated_qa_pairs",
            "benchmark_splits"} <= keys
    checks = defs.resolve_asset_graph().asset_check_keys
    assert {c.name for c in checks if c.asset_key.to_user_string() == "validated_qa_pairs"} == {
        name for name, _ in check_names("validated_qa_pairs")}
    specs = {spec.name: spec for a in defs.assets for spec in getattr(a, "check_specs", [])}
    gates = {name for name, _ in check_names("validated_qa_pairs")}
    assert all(specs[name].blocking for name in gates)  # bad data stops the graph
    assert not specs["kept_at_least_half"].blocking  # a warning: little known data is a finding, not a fault
    assert {"base_model", "knowledge_filter", "unlearning_sequence"} <= keys


def test_loading_imports_no_heavy_library():
    code = ("import sys, mlu_assets.definitions; "
            "print(sorted(m for m in ('torch', 'transformers', 'mlflow', 'great_expectations', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT)
    assert out.stdout.strip() == "[]"


def test_settings_come_from_the_environment(tmp_path):
    code = ("import dagster as dg; from mlu_assets.definitions import defs; r = defs.resources\n"
            "with dg.build_resources({'b': r['benchmark'], 'm': r['mlflow']}) as res:\n"
            "    print(res.b.profile, res.m.tracking_uri, res.b.data_dir, sep='|')\n"
            "print(r['benchmark']._convert_to_config_dictionary()['profile'])")
    env = {**os.environ, "MLU_PROFILE": "full", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db", "MLU_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT, env=env)
    resolved, config = out.stdout.strip().splitlines()
    assert resolved == f"full|sqlite:///{tmp_path}/m.db|{tmp_path}"
    assert config == "{'env': 'MLU_PROFILE'}"  # an EnvVar: the UI shows the name, not the value
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLU_") and k != "MLFLOW_TRACKING_URI"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT, env=env)
    resolved, config = out.stdout.strip().splitlines()
    assert resolved == f"mini|sqlite:///{PROJECT}/mlflow/mlflow.db|{PROJECT}/data" and config == "mini"


def test_dagster_cli_lists_the_assets(tmp_path):
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    out = subprocess.run([dagster, "asset", "list", "-m", "mlu_assets.definitions"], capture_output=True,
                         text=True, cwd=PROJECT, env={**os.environ, "DAGSTER_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert {"mlubench_release", "validated_qa_pairs", "benchmark_splits"} <= set(out.stdout.split())
