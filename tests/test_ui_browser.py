"""Both UIs for real, in headless Chromium: the Dagster UI shows the asset graph, the Great
Expectations checks of validated_qa_pairs and the sensors and schedule; the MLflow UI lists
mlu-lumoe-expert and its versions.
Screenshots go to test-artifacts/. `make ui`'s script is what runs, and Ctrl-C stops it."""

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest


PROJECT = Path(__file__).resolve().parent.parent
ARTIFACTS = PROJECT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer in {seconds} s")


@pytest.fixture
def stores(tmp_path, finished_run):
    """A Dagster home, and the MLflow store of a finished run (the base model and two experts registered)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "dagster_home" / "dagster.yaml", home)
    return home, finished_run["tracking_uri"]


def _as_in_a_terminal() -> None:
    """Ctrl-C and kill work on ui.sh as in a terminal: a suite started in the background (`cmd &`,
    nohup) ignores SIGINT and SIGQUIT, the child inherits that, and bash cannot trap a signal it
    was started ignoring, so ui.sh would never stop its UIs (seen: the test waited 60 s and both
    UIs ran on)."""
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def test_dagster_and_mlflow_uis_in_a_browser(stores, tmp_path):
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    home, uri = stores
    dagster_port, mlflow_port = free_port(), free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "MLFLOW_TRACKING_URI": uri, "DAGSTER_PORT": str(dagster_port),
           "MLFLOW_PORT": str(mlflow_port), "MLU_DATA_DIR": str(tmp_path / "data")}
    ui = subprocess.Popen(["bash", "scripts/ui.sh"], cwd=PROJECT, env=env, start_new_session=True,
                          stdout=open(tmp_path / "ui.log", "w"), stderr=subprocess.STDOUT,
                          preexec_fn=_as_in_a_terminal)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        wait_for(f"http://127.0.0.1:{dagster_port}/server_info")
        wait_for(f"http://127.0.0.1:{mlflow_port}/health")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})

            page.goto(f"http://127.0.0.1:{dagster_port}/assets/validated_qa_pairs?view=lineage", wait_until="networkidle")
            skip = page.get_by_role("button", name="Skip")  # Dagster's one-time newsletter prompt
            try:
                skip.wait_for(timeout=5_000)
                skip.click()
            except Exception:  # noqa: BLE001 - no prompt this time
                pass
            for asset in ("validated_qa_pairs", "qa_pairs", "raw_crawls", "entity_catalog", "benchmark_splits"):
                page.get_by_text(asset, exact=True).first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "dagster-asset-graph.png"))

            page.goto(f"http://127.0.0.1:{dagster_port}/assets/validated_qa_pairs?view=checks", wait_until="networkidle")
            for check in ("qa_ids_unique", "answer_not_empty", "image_path_no_parent", "forget_retain_disjoint"):
                page.get_by_text(check).first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "dagster-checks.png"), full_page=True)

            # The sensors and the nightly schedule, all running without anyone switching them on.
            page.goto(f"http://127.0.0.1:{dagster_port}/automation", wait_until="networkidle")
            for name in ("new_base_models", "unlearning_requests", "mlu_automation", "nightly_reevaluation"):
                page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "dagster-automation.png"), full_page=True)

            page.goto(f"http://127.0.0.1:{mlflow_port}/#/models", wait_until="domcontentloaded")  # MLflow keeps polling
            page.get_by_text("mlu-lumoe-expert").first.wait_for(timeout=60_000)
            assert page.get_by_text("mlu-base-model").count() >= 1
            page.screenshot(path=str(ARTIFACTS / "mlflow-models.png"))
            page.goto(f"http://127.0.0.1:{mlflow_port}/#/models/mlu-lumoe-expert", wait_until="domcontentloaded")
            page.get_by_text("Version 2").first.wait_for(timeout=60_000)
            assert page.get_by_text("Version 1").count() >= 1
            page.screenshot(path=str(ARTIFACTS / "mlflow-lumoe-expert.png"), full_page=True)
            browser.close()
    finally:
        os.killpg(ui.pid, signal.SIGINT)  # what Ctrl-C does
        ui.wait(timeout=60)
    # Nothing of either UI is left: no process still names one of their ports.
    ports = (str(dagster_port), str(mlflow_port))
    leftover = [" ".join(p.info["cmdline"]) for p in psutil.process_iter(["cmdline"])
                if p.info["cmdline"] and any(port in " ".join(p.info["cmdline"]) for port in ports)]
    assert ui.returncode is not None and not leftover, (leftover, (tmp_path / "ui.log").read_text()[-2000:])
