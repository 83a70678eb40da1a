"""Find the MLUBench release, verify it, and extract it once.

Resolution order (DESIGN.md): an explicit path (`MLU_MLUBENCH_PATH`, a folder or a zip) →
the copy in ../shared → the local cache → the upstream GitHub repository. Every source ends
in the same extracted folder, `<cache>/extracted/<digest>/`, holding three trees:

    MLUBench/               the full task files and per-entity files   (MLUBench.zip)
    tasks/                  evaluation subsets, paraphrases, entity lists (mlubench_eval.zip)
    Topics and Entities/    question templates and entity lists per class (mlubench_templates.zip)

Archives are checked by sha256; extracted trees by a content digest, because upstream ships the
eval and template folders inside another zip, so only their content can be compared.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

UPSTREAM_BASE_URL = "https://github.com/lihe-maxsize/Lifelong_Unlearning_main/raw/main"


@dataclass(frozen=True)
class Component:
    archive: str  # file name in the release folder
    tree: str  # top folder inside the archive and inside the extracted release
    archive_sha256: str
    tree_digest: str
    upstream_archive: str  # the upstream file that holds this tree
    upstream_prefix: str  # where the tree sits inside that upstream file


COMPONENTS = (
    Component(
        "MLUBench.zip", "MLUBench",
        "a66ad84f5cd9a4ad4424a53a7e173b8039db8eb9cbe91c85b819801bc527412f",
        "53a16153303d4989db42742ae29b2d0bc625b48fd307768df6d9dac71ce123cd",
        "MLUBench.zip", "MLUBench/",
    ),
    Component(
        "mlubench_eval.zip", "tasks",
        "d121b6e7e3e3ae6340acec859d816fb8a7ca70c53146bb5cc7ed58201804cfe2",
        "ac20fbff6add1d7eb063e493bda39f425685d8890305b7d2a3ae1bf377c5953b",
        "LLaVA_unlearning_main.zip", "LLaVA_unlearning_main/tasks/",
    ),
    Component(
        "mlubench_templates.zip", "Topics and Entities",
        "dd1b5a959770a8221a837720e26ababa6fc877c3b33a476c991c5c5bd825e7ce",
        "d1bcf0ce9fc6125ccc5f507bd1e904c5c3fa22f32f7621a61a8ff15352564d88",
        "LLaVA_unlearning_main.zip", "LLaVA_unlearning_main/Topics and Entities/",
    ),
)
OFFICIAL_DIGEST = hashlib.sha256("".join(c.tree_digest for c in COMPONENTS).encode()).hexdigest()


class ReleaseNotFoundError(RuntimeError):
    """No source gave a verified release; the message lists every place tried and why."""

    def __init__(self, attempts: list[tuple[str, str]]):
        self.attempts = attempts
        lines = "\n".join(f"  {i}. {where}: {why}" for i, (where, why) in enumerate(attempts, 1))
        super().__init__(
            "MLUBench release not found. Tried, in order:\n" + lines + "\n"
            "Point MLU_MLUBENCH_PATH at a folder holding MLUBench.zip, mlubench_eval.zip and "
            "mlubench_templates.zip (see README, 'Where the data comes from')."
        )


class ExplicitReleaseError(ReleaseNotFoundError):
    """MLU_MLUBENCH_PATH is set but does not give a verified release: mlu stops there, without
    trying ../shared, the cache or upstream (what the user asked for must win or fail)."""

    def __init__(self, where: str, why: str):
        self.attempts = [(f"MLU_MLUBENCH_PATH ({where})", why)]
        RuntimeError.__init__(
            self, f"MLU_MLUBENCH_PATH={where}: {why}.\nThe release you point at is used or nothing is: mlu "
            "does not fall back to ../shared, the cache or upstream. Fix the path, or unset MLU_MLUBENCH_PATH "
            "to use those (see README, 'Where the data comes from').")


class _Rejected(Exception):
    """One candidate did not work; the text says why."""


@dataclass
class Release:
    root: Path  # the extracted folder with the three trees
    origin: str  # which source gave it
    official: bool  # content identical to the published release
    digest: str  # content digest of the three trees together
    tree_digests: dict[str, str] = field(default_factory=dict)
    attempts: list[tuple[str, str]] = field(default_factory=list)

    def path(self, relative: str) -> Path:
        return self.root / relative


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_digest(root: Path) -> str:
    """sha256 over the sorted (relative path, file sha256) lines of every file below root."""
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(root).as_posix()}\t{sha256_file(p)}\n".encode())
    return h.hexdigest()


def _read_manifest(folder: Path) -> dict[str, str]:
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        return {}
    out = {}
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[1].lstrip("*")] = parts[0].lower()
    return out


def _member_name(info: zipfile.ZipInfo) -> str:
    """The member's real name: the release's zips hold UTF-8 names (Pokémon, 苏姿丰) without
    the UTF-8 flag, which zipfile then reads as cp437."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("utf-8")
    except UnicodeError:
        return info.filename


def _safe_extract(zf: zipfile.ZipFile, prefix: str, dest: Path) -> int:
    """Extract the members under prefix into dest, refusing paths that escape it."""
    n = 0
    for info in zf.infolist():
        name = _member_name(info)
        if info.is_dir() or not name.startswith(prefix):
            continue
        rel = name[len(prefix):]
        target = (dest / rel).resolve()
        if not rel or dest.resolve() not in target.parents:
            raise _Rejected(f"archive member {name!r} would land outside the release")
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
        n += 1
    return n


class ReleaseResolver:
    """Tries each source in order; the first verified one wins."""

    def __init__(
        self,
        cache_dir: Path,
        explicit_path: str | None = None,
        shared_dir: Path | None = None,
        upstream_base_url: str | None = UPSTREAM_BASE_URL,
        download_timeout_s: float = 60.0,
        download_retries: int = 3,
    ):
        self.cache_dir = Path(cache_dir)
        self.explicit_path = explicit_path or None
        self.shared_dir = shared_dir
        self.upstream_base_url = upstream_base_url or None
        self.download_timeout_s = download_timeout_s
        self.download_retries = download_retries

    @property
    def extracted_dir(self) -> Path:
        return self.cache_dir / "extracted"

    def resolve(self) -> Release:
        attempts: list[tuple[str, str]] = []
        candidates = [
            ("MLU_MLUBENCH_PATH", self.explicit_path, self._from_explicit),
            ("../shared/data/mlubench", self.shared_dir, self._from_folder_of_archives),
            ("local cache", self.extracted_dir / OFFICIAL_DIGEST[:16], self._from_cache),
            ("upstream", self.upstream_base_url, self._from_upstream),
        ]
        for label, where, load in candidates:
            if where is None:
                attempts.append((label, "not set" if label != "upstream" else "not set (download off)"))
                continue
            try:
                release = load(where)
            except _Rejected as why:
                attempts.append((f"{label} ({where})", str(why)))
                if load == self._from_explicit:  # the user's own setting wins or fails: never a silent fallback
                    raise ExplicitReleaseError(where, str(why)) from None
                continue
            release.origin = f"{label} ({where})"
            release.attempts = attempts + [(release.origin, "ok")]
            return release
        raise ReleaseNotFoundError(attempts)

    # -- sources ---------------------------------------------------------------------------
    def _from_explicit(self, where: str) -> Release:
        path = Path(where).expanduser()
        if path.is_file() and zipfile.is_zipfile(path):
            return self._from_zip_of_folder(path)
        if path.is_dir():
            if all((path / c.tree).is_dir() for c in COMPONENTS):
                return self._from_extracted(path)
            return self._from_folder_of_archives(path, allow_manifest=True)
        if path.is_file():
            raise _Rejected("a file, but not a zip file")
        raise _Rejected("no such folder or zip file")

    def _from_zip_of_folder(self, path: Path) -> Release:
        """A zip holding a release folder (the three archives, perhaps SHA256SUMS)."""
        with tempfile.TemporaryDirectory() as tmp:
            with zipfile.ZipFile(path) as zf:
                _safe_extract(zf, "", Path(tmp))
            hits = [p.parent for p in Path(tmp).rglob(COMPONENTS[0].archive)]
            if not hits:
                raise _Rejected(f"the zip holds no {COMPONENTS[0].archive}")
            return self._from_folder_of_archives(hits[0], allow_manifest=True)

    def _from_folder_of_archives(self, folder: Path, allow_manifest: bool = False) -> Release:
        folder = Path(folder)
        if not folder.is_dir():
            raise _Rejected("no such folder")
        missing = [c.archive for c in COMPONENTS if not (folder / c.archive).is_file()]
        if missing:
            raise _Rejected(f"missing {', '.join(missing)}")
        manifest = _read_manifest(folder) if allow_manifest else {}
        official = True
        for c in COMPONENTS:
            got = sha256_file(folder / c.archive)
            if got == c.archive_sha256:
                continue
            official = False
            if manifest.get(c.archive) == got:
                continue  # a user's own release, consistent with its own SHA256SUMS
            expected = manifest.get(c.archive, c.archive_sha256)
            raise _Rejected(f"sha256 mismatch for {c.archive}: expected {expected}, got {got}")
        return self._extract_archives(folder, official)

    def _extract_archives(self, folder: Path, official: bool) -> Release:
        def fill(tmp: Path) -> None:
            for c in COMPONENTS:
                with zipfile.ZipFile(folder / c.archive) as zf:
                    if not _safe_extract(zf, f"{c.tree}/", tmp / c.tree):
                        raise _Rejected(f"{c.archive} has no folder {c.tree}/")

        return self._install(fill, official)

    def _from_extracted(self, folder: Path) -> Release:
        """An already extracted release (a user's own edit of it, say): copied, then digested."""

        def fill(tmp: Path) -> None:
            for c in COMPONENTS:
                shutil.copytree(folder / c.tree, tmp / c.tree)

        return self._install(fill, official=None)

    def _from_cache(self, folder: Path) -> Release:
        if not folder.is_dir():
            raise _Rejected("empty")
        release = self._verified(folder)
        if not release.official:
            raise _Rejected("cached copy no longer matches the published checksums")
        return release

    def _from_upstream(self, base_url: str) -> Release:
        with tempfile.TemporaryDirectory() as tmp:
            archives: dict[str, Path] = {}
            for name in sorted({c.upstream_archive for c in COMPONENTS}):
                archives[name] = self._download(f"{base_url.rstrip('/')}/{name}", Path(tmp) / name)
            got = sha256_file(archives[COMPONENTS[0].upstream_archive])
            if got != COMPONENTS[0].archive_sha256:
                raise _Rejected(
                    f"sha256 mismatch for downloaded {COMPONENTS[0].upstream_archive}: "
                    f"expected {COMPONENTS[0].archive_sha256}, got {got}"
                )

            def fill(dest: Path) -> None:
                for c in COMPONENTS:
                    with zipfile.ZipFile(archives[c.upstream_archive]) as zf:
                        if not _safe_extract(zf, c.upstream_prefix, dest / c.tree):
                            raise _Rejected(f"{c.upstream_archive} has no {c.upstream_prefix}")

            release = self._install(fill, official=None)
            if not release.official:
                shutil.rmtree(release.root, ignore_errors=True)
                raise _Rejected("downloaded content does not match the published release")
            return release

    # -- helpers ---------------------------------------------------------------------------
    def _download(self, url: str, dest: Path) -> Path:
        last = ""
        for attempt in range(self.download_retries):
            try:
                with urllib.request.urlopen(url, timeout=self.download_timeout_s) as resp:
                    dest.write_bytes(resp.read())
                return dest
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code} for {url}"
                if e.code < 500 and e.code != 429:
                    break
            except (urllib.error.URLError, TimeoutError, OSError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)} for {url}"
            time.sleep(min(2**attempt, 8) * 0.25)
        raise _Rejected(f"download failed after {attempt + 1} tries: {last}")

    def _install(self, fill, official: bool | None) -> Release:
        """Fill a temporary folder, digest it, then move it under extracted/<digest> at once."""
        self.extracted_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.extracted_dir))
        try:
            fill(tmp)
            release = self._verified(tmp)
            final = self.extracted_dir / release.digest[:16]
            if final.is_dir():
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        release.root = final
        if official is not None:
            release.official = release.official and official
        return release

    def _verified(self, folder: Path) -> Release:
        digests = {}
        for c in COMPONENTS:
            if not (folder / c.tree).is_dir():
                raise _Rejected(f"no folder {c.tree}/")
            digests[c.tree] = tree_digest(folder / c.tree)
        digest = hashlib.sha256("".join(digests[c.tree] for c in COMPONENTS).encode()).hexdigest()
        official = all(digests[c.tree] == c.tree_digest for c in COMPONENTS)
        return Release(root=folder, origin="", official=official, digest=digest, tree_digests=digests)

