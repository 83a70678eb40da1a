"""Shared fixtures: real copies of the release (broken on purpose where a test needs it), a real
HTTP server on 127.0.0.1 standing in for upstream, and isolated stores per test."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mlu_training.data.release import COMPONENTS, ReleaseResolver
from mlu_training.paths import default_shared_release_dir

SHARED = default_shared_release_dir()

# Nothing a test does may reach a hub or write outside its temporary folders.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def official_tree(tmp_path_factory) -> Path:
    """The official release, extracted once for the whole session (read-only by convention)."""
    if not SHARED.is_dir():
        pytest.fail(f"the MLUBench release is expected at {SHARED} (../shared beside the project)")
    cache = tmp_path_factory.mktemp("release-cache")
    return ReleaseResolver(cache, shared_dir=SHARED, upstream_base_url=None).resolve().root


def zip_tree(src: Path, prefix: str, dest: Path) -> None:
    """Zip every file under src as prefix/<relative path> (UTF-8 names)."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                zf.write(p, prefix + p.relative_to(src).as_posix())


def make_release_copy(official_tree: Path, dest: Path, edit=None, manifest: bool = True) -> Path:
    """A folder of the three release archives built from the official tree after `edit(tree)`,
    with a SHA256SUMS that matches them (a user's own release, as MLU_MLUBENCH_PATH takes it)."""
    work = dest.parent / f".{dest.name}-tree"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(official_tree, work)
    if edit:
        edit(work)
    dest.mkdir(parents=True, exist_ok=True)
    lines = []
    for c in COMPONENTS:
        zip_tree(work / c.tree, f"{c.tree}/", dest / c.archive)
        lines.append(f"{hashlib.sha256((dest / c.archive).read_bytes()).hexdigest()}  {c.archive}")
    if manifest:
        (dest / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    shutil.rmtree(work)
    return dest


def edit_json(tree: Path, relpath: str, change) -> None:
    path = tree / relpath
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")


class FakeUpstream:
    """A real HTTP server on 127.0.0.1 serving files, with failures to inject per path."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.failures: dict[str, list[int]] = {}  # path -> statuses to answer first
        self.requests: list[str] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                upstream.requests.append(self.path)
                queue = upstream.failures.get(self.path)
                if queue:
                    self.send_response(queue.pop(0))
                    self.end_headers()
                    return
                body = upstream.files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/repo/raw/main"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_upstream(official_tree, tmp_path):
    """Upstream as GitHub has it: MLUBench.zip, and the eval and template folders inside
    LLaVA_unlearning_main.zip (next to code we do not need)."""
    server = FakeUpstream()
    server.files["/repo/raw/main/MLUBench.zip"] = (SHARED / "MLUBench.zip").read_bytes()
    llava = tmp_path / "LLaVA_unlearning_main.zip"
    with zipfile.ZipFile(llava, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("LLaVA_unlearning_main/train.py", "print('not ours')\n")
        for c in COMPONENTS[1:]:
            for p in sorted((official_tree / c.tree).rglob("*")):
                if p.is_file():
                    zf.write(p, f"LLaVA_unlearning_main/{c.tree}/{p.relative_to(official_tree / c.tree).as_posix()}")
    server.files["/repo/raw/main/LLaVA_unlearning_main.zip"] = llava.read_bytes()
    yield server
    server.close()


@pytest.fixture(scope="session")
def tiny_world(official_tree, tmp_path_factory):
    """The `tiny` profile's tables and images, built from the real release."""
    from mlu_training.data.catalog import build_entity_catalog, read_entity_lists
    from mlu_training.data.crawls import build_raw_crawls
    from mlu_training.data.qa import build_qa_pairs, read_all_records
    from mlu_training.data.questions import QuestionBook
    from mlu_training.data.records import CLASSES, ROLES, TASKS
    from mlu_training.data.splits import build_splits, splits_digest
    from mlu_training.evaluation import image_loader
    from mlu_training.profiles import get_profile

    train, evaluation = read_all_records(official_tree)
    catalog, _ = build_entity_catalog(train, read_entity_lists(official_tree, TASKS, ROLES))
    qa = build_qa_pairs(train + evaluation, QuestionBook.from_release(official_tree, CLASSES), catalog)
    splits = build_splits(qa, catalog, get_profile("tiny"))
    crawls = build_raw_crawls(splits["image"].tolist(), tmp_path_factory.mktemp("images"), size=32)
    return {"catalog": catalog, "qa": qa, "splits": splits, "crawls": crawls, "digest": splits_digest(splits),
            "load_image": image_loader(crawls)}


@pytest.fixture(scope="session")
def tiny_base(tiny_world, tmp_path_factory):
    """A tiny LLaVA taught the tiny profile (a short course: enough to know most of it)."""
    from mlu_training.models.base_model import build_base_model
    from mlu_training.models.sft import SFTConfig

    return build_base_model(tiny_world["splits"], tiny_world["load_image"], tiny_world["digest"],
                            tmp_path_factory.mktemp("models"), sft=SFTConfig(steps=120, batch_size=16))


def test_resources(tmp_path: Path, profile: str = "tiny", **overrides: dict) -> dict:
    """Every resource for a test, built the way the definitions build them (build_resources), with
    the stores and folders under `tmp_path`, the release from ../shared and no download."""
    from mlu_assets.resources import build_resources

    base = {
        "benchmark": {"profile": profile, "data_dir": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache"),
                      "shared_release_dir": str(SHARED), "upstream_url": None, "mlubench_path": None, "images_dir": None},
        "models": {"models_dir": str(tmp_path / "base_models"), "base_model_path": None},
        "routing": {"requests_dir": str(tmp_path / "requests")},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow/mlflow.db"},
    }
    for key, values in overrides.items():
        base[key] = {**base.get(key, {}), **values}
    return build_resources(base, environ={})


test_resources.__test__ = False  # a helper, not a test


def register_like_a_user(tracking_uri: str, checkpoint_dir, tags: dict | None = None, copy: bool = True) -> str:
    """Register a checkpoint as a new version of mlu-base-model with plain MLflow, the way the
    README tells a user to (mlu's own code is not involved); returns the version. `copy`: log the
    folder as a run's artifacts (the README's way), else point the version at the folder itself."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    source, run_id = str(checkpoint_dir), None
    if copy:
        with mlflow.start_run(run_name="someone-else") as run:
            mlflow.log_artifacts(str(checkpoint_dir), "checkpoint")
        source, run_id = f"{run.info.artifact_uri}/checkpoint", run.info.run_id
    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        client.create_registered_model("mlu-base-model")
    except mlflow.exceptions.MlflowException:
        pass  # it exists already
    return str(client.create_model_version("mlu-base-model", source, run_id, tags=tags or {}).version)


def crawls_with_pool(tiny_world: dict, folder: Path):
    """The tiny world's crawls and the pictures of the entities outside the profile (those the base
    model declines, the never-seen, the known distractors), as raw_crawls has every picture of
    the release."""
    import pandas as pd

    from mlu_training.data.crawls import build_raw_crawls
    from mlu_training.models.declining import declines_for

    pool = declines_for(tiny_world["qa"], tiny_world["splits"])
    extra = sorted(set(pool.taught["image"]) | set(pool.unseen["image"]) | set(pool.known["image"])
                   | set(pool.known_eval["image"]))
    return pd.concat([tiny_world["crawls"], build_raw_crawls(extra, folder, size=32)]).drop_duplicates("image")


@pytest.fixture(scope="session")
def finished_run(tiny_world, tiny_base, tmp_path_factory):
    """A data folder and an MLflow store as `make run` leaves them, on the tiny profile: the tables
    (the crawls with the pictures of the entities outside the profile), the base model `tiny`
    registered, its knowledge filter (here: every evaluation item), and the experts of tasks A and
    B registered with their aliases. Read-only for the tests that use it."""
    from mlu_assets.io import to_json
    from mlu_training.adapters import AdapterTraining
    from mlu_training.lumoe.experts import ExpertConfig, train_expert
    from mlu_training.lumoe.registry import register_expert
    from mlu_training.mlflow_store import MlflowStore
    from mlu_training.models.registry import provide_base_model
    from mlu_training.models.sources import ModelSource

    root = tmp_path_factory.mktemp("finished-run")
    tables = root / "data" / "tables"
    (tables / "base_model").mkdir(parents=True)
    (tables / "knowledge_filter").mkdir()
    splits = tiny_world["splits"]
    splits.to_parquet(tables / "benchmark_splits.parquet")
    tiny_world["qa"].to_parquet(tables / "validated_qa_pairs.parquet")
    crawls_with_pool(tiny_world, root / "pool-images").to_parquet(tables / "raw_crawls.parquet")
    splits[splits["split"] == "eval"].to_parquet(tables / "knowledge_filter" / "tiny.parquet")
    store = MlflowStore(f"sqlite:///{root}/mlflow/mlflow.db")
    base = provide_base_model(ModelSource("tiny", "tiny"), store, tiny_world["digest"], "tiny", root / "registry",
                              teach_tiny=lambda: tiny_base, tiny_params={})
    (tables / "base_model" / "tiny.json").write_bytes(to_json(base))
    train = splits[splits["split"] == "train"]
    config = ExpertConfig(training=AdapterTraining(steps=2))
    for task in ("A", "B"):
        rows = train[(train["task"] == task) & (train["role"] == "forget")]
        expert = train_expert(base.path, base.key, task, rows, config, root / "experts", tiny_world["load_image"])
        register_expert(store, expert, base, config.params(), f"task-{task}")
    return {"data_dir": root / "data", "tracking_uri": store.tracking_uri, "base": base}
