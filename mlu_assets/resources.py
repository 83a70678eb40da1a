"""Resources: the benchmark's settings and MLflow. Each is a ConfigurableResource fed by EnvVar
(see settings.py); the plain logic they configure lives in mlu_training."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from mlu_training import paths
from mlu_training.data.release import UPSTREAM_BASE_URL


class BenchmarkSettings(dg.ConfigurableResource):
    """Where the release comes from, which profile to run, where outputs go."""

    profile: str = "mini"  # MLU_PROFILE
    data_dir: str = str(paths.default_data_dir())  # MLU_DATA_DIR
    cache_dir: str = str(paths.default_cache_dir())  # MLU_CACHE_DIR
    mlubench_path: str | None = None  # MLU_MLUBENCH_PATH: a folder or zip
    shared_release_dir: str | None = str(paths.default_shared_release_dir())
    upstream_url: str | None = UPSTREAM_BASE_URL  # MLU_MLUBENCH_UPSTREAM ("" turns it off)
    images_dir: str | None = None  # MLU_IMAGES_DIR: the official downloaded_images/ folder

    def resolver(self):
        from mlu_training.data.release import ReleaseResolver

        return ReleaseResolver(
            cache_dir=Path(self.cache_dir),
            explicit_path=self.mlubench_path,
            shared_dir=Path(self.shared_release_dir) if self.shared_release_dir else None,
            upstream_base_url=self.upstream_url or None,
        )

    def get_profile(self):
        from mlu_training.profiles import get_profile

        return get_profile(self.profile)


class MLflowTracking(dg.ConfigurableResource):
    """MLflow tracking and model registry (same URI). Default: SQLite under the project."""

    tracking_uri: str = paths.default_tracking_uri()  # MLFLOW_TRACKING_URI
    experiment: str = "mlubench"
