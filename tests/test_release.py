"""Finding and verifying the release: the order of sources, checksums, upstream download."""

import shutil
import zipfile

import pytest
from conftest import SHARED, make_release_copy

from mlu_training.data.release import OFFICIAL_DIGEST, ExplicitReleaseError, ReleaseNotFoundError, ReleaseResolver


def test_explicit_path_wins_over_shared(tmp_path, official_tree):
    mine = make_release_copy(official_tree, tmp_path / "mine",
                             edit=lambda t: (t / "tasks/all_tasks/taskA_forget.txt").write_text("Dog\n"))
    release = ReleaseResolver(tmp_path / "cache", explicit_path=str(mine), shared_dir=SHARED,
                              upstream_base_url=None).resolve()
    assert release.origin.startswith("MLU_MLUBENCH_PATH")
    assert not release.official  # edited, accepted through its own SHA256SUMS
    assert (release.root / "tasks/all_tasks/taskA_forget.txt").read_text() == "Dog\n"


def test_shared_then_cache(tmp_path):
    cache = tmp_path / "cache"
    first = ReleaseResolver(cache, shared_dir=SHARED, upstream_base_url=None).resolve()
    assert first.origin.startswith("../shared") and first.official
    assert first.root == cache / "extracted" / OFFICIAL_DIGEST[:16]
    assert first.attempts[0] == ("MLU_MLUBENCH_PATH", "not set")
    # ../shared gone: the verified cache answers, without network.
    again = ReleaseResolver(cache, shared_dir=tmp_path / "no-shared", upstream_base_url=None).resolve()
    assert again.origin.startswith("local cache") and again.official and again.root == first.root


def test_tampered_cache_is_not_trusted(tmp_path):
    cache = tmp_path / "cache"
    root = ReleaseResolver(cache, shared_dir=SHARED, upstream_base_url=None).resolve().root
    (root / "MLUBench/Tasks/TaskA/taskA_forget.json").write_text("[]")
    with pytest.raises(ReleaseNotFoundError, match="no longer matches the published checksums"):
        ReleaseResolver(cache, shared_dir=None, upstream_base_url=None).resolve()


def test_checksum_mismatch_is_rejected_and_every_source_listed(tmp_path, official_tree):
    bad = tmp_path / "bad"
    shutil.copytree(SHARED, bad)
    (bad / "MLUBench.zip").chmod(0o644)
    with open(bad / "MLUBench.zip", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(ReleaseNotFoundError) as err:
        ReleaseResolver(tmp_path / "cache", shared_dir=bad, upstream_base_url=None).resolve()
    text = str(err.value)
    assert "sha256 mismatch for MLUBench.zip" in text
    assert [a[0].split(" ")[0] for a in err.value.attempts] == ["MLU_MLUBENCH_PATH", "../shared/data/mlubench", "local", "upstream"]
    assert "empty" in text and "not set" in text and "download off" in text


def _zip_with_parent_member(path):
    with zipfile.ZipFile(path, "w") as zf:
        for p in SHARED.iterdir():
            zf.write(p, f"mlubench/{p.name}")
        zf.writestr("../escaped.txt", "outside")
    return path


@pytest.mark.parametrize("given", ["mistyped", "zip with ../", "not a zip"])
def test_a_bad_explicit_path_fails_loudly_instead_of_falling_back(tmp_path, given):
    """MLU_MLUBENCH_PATH is the user's choice: a wrong one stops with its name, even though
    ../shared holds a good release (once, it silently fell back there and exited 0)."""
    where = {"mistyped": lambda: tmp_path / "mlubnech",
             "zip with ../": lambda: _zip_with_parent_member(tmp_path / "evil.zip"),
             "not a zip": lambda: (tmp_path / "release.zip").write_text("not a zip") and tmp_path / "release.zip"}[given]()
    with pytest.raises(ExplicitReleaseError) as err:
        ReleaseResolver(tmp_path / "cache", explicit_path=str(where), shared_dir=SHARED, upstream_base_url=None).resolve()
    text = str(err.value)
    assert text.startswith(f"MLU_MLUBENCH_PATH={where}: ") and "does not fall back" in text
    assert {"mistyped": "no such folder", "zip with ../": "'../escaped.txt' would land outside",
            "not a zip": "not a zip file"}[given] in text
    assert not (tmp_path / "escaped.txt").exists()
    assert not any((tmp_path / "cache").glob("extracted/*/MLUBench"))  # ../shared was not used


def test_the_asset_fails_on_a_bad_explicit_path(tmp_path):
    import dagster as dg
    from conftest import test_resources

    from mlu_assets.benchmark.assets import mlubench_release

    resources = test_resources(tmp_path, benchmark={"mlubench_path": str(tmp_path / "typo")})
    result = dg.materialize([mlubench_release], resources=resources, instance=dg.DagsterInstance.ephemeral(),
                            raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert f"MLU_MLUBENCH_PATH={tmp_path / 'typo'}: no such folder" in failure.step_failure_data.user_failure_data.description


def test_an_empty_upstream_setting_turns_the_download_off(tmp_path):
    """`MLU_MLUBENCH_UPSTREAM=` (empty) is a choice, as the README says, not "unset"."""
    import os
    import subprocess
    import sys

    from mlu_training.data.release import UPSTREAM_BASE_URL

    code = ("import dagster as dg; from mlu_assets.resources import build_resources\n"
            "with dg.build_resources({'b': build_resources()['benchmark']}) as r: print(r.b.resolver().upstream_base_url)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLU_")}
    off = subprocess.run([sys.executable, "-c", code], env={**env, "MLU_MLUBENCH_UPSTREAM": ""}, capture_output=True,
                         text=True, check=True)
    assert off.stdout.strip() == "None"
    on = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert on.stdout.strip() == UPSTREAM_BASE_URL
    from mlu_assets.settings import setting

    assert setting("MLU_MLUBENCH_UPSTREAM", {"MLU_MLUBENCH_UPSTREAM": ""}) == ""
    assert setting("MLU_PROFILE", {"MLU_PROFILE": ""}) == "mini"  # elsewhere empty is still unset


def test_manifest_that_does_not_match_is_rejected(tmp_path, official_tree):
    mine = make_release_copy(official_tree, tmp_path / "mine", edit=lambda t: (t / "MLUBench/extra.txt").write_text("x"))
    (mine / "SHA256SUMS").write_text("0" * 64 + "  MLUBench.zip\n")
    with pytest.raises(ReleaseNotFoundError, match=f"expected {'0' * 64}"):
        ReleaseResolver(tmp_path / "cache", explicit_path=str(mine), upstream_base_url=None).resolve()


def test_explicit_zip_of_a_release_folder(tmp_path):
    archive = tmp_path / "release.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in SHARED.iterdir():
            zf.write(p, f"mlubench/{p.name}")
    release = ReleaseResolver(tmp_path / "cache", explicit_path=str(archive), upstream_base_url=None).resolve()
    assert release.official and release.origin.startswith("MLU_MLUBENCH_PATH")


def test_upstream_download_with_retries(tmp_path, fake_upstream):
    fake_upstream.failures["/repo/raw/main/MLUBench.zip"] = [503, 429]
    release = ReleaseResolver(tmp_path / "cache", shared_dir=tmp_path / "none",
                              upstream_base_url=fake_upstream.url).resolve()
    assert release.official and release.origin.startswith("upstream")
    assert fake_upstream.requests.count("/repo/raw/main/MLUBench.zip") == 3
    # The eval tree came out of LLaVA_unlearning_main.zip, and only it.
    assert (release.root / "tasks/TaskA/taskA_forget.json").is_file()
    assert not (release.root / "tasks/train.py").exists()
    # Next time the cache answers and upstream is not asked.
    n = len(fake_upstream.requests)
    assert ReleaseResolver(tmp_path / "cache", upstream_base_url=fake_upstream.url).resolve().origin.startswith("local cache")
    assert len(fake_upstream.requests) == n


def test_upstream_with_wrong_bytes_is_rejected(tmp_path, fake_upstream):
    fake_upstream.files["/repo/raw/main/MLUBench.zip"] += b"garbage"
    with pytest.raises(ReleaseNotFoundError, match="sha256 mismatch for downloaded MLUBench.zip"):
        ReleaseResolver(tmp_path / "cache", upstream_base_url=fake_upstream.url).resolve()
    assert not any((tmp_path / "cache" / "extracted").glob("*/MLUBench"))  # nothing half-installed


def test_upstream_not_found_is_not_retried(tmp_path, fake_upstream):
    del fake_upstream.files["/repo/raw/main/LLaVA_unlearning_main.zip"]
    with pytest.raises(ReleaseNotFoundError, match="HTTP 404"):
        ReleaseResolver(tmp_path / "cache", upstream_base_url=fake_upstream.url).resolve()
    assert fake_upstream.requests.count("/repo/raw/main/LLaVA_unlearning_main.zip") == 1
