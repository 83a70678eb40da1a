"""The code's shape, checked: no import cycle between mlu's modules (lazy imports inside
functions included: a cycle there is still two modules that need each other), and every fact
that has one home is spelled only there."""

import ast
import re
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
PACKAGES = ("mlu_training", "mlu_assets")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The mlu modules `path` imports, anywhere in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def test_no_module_imports_back_into_one_that_imports_it():
    files = [p for pkg in PACKAGES for p in (PROJECT / pkg).rglob("*.py")]
    modules = {module_name(p) for p in files}
    graph = {module_name(p): imports_of(p, modules) - {pkg for pkg in modules if pkg in PACKAGES} for p in files}

    def reaches(start: str, goal: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == goal:
                    return path + [nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = [" -> ".join(c) for m in sorted(graph) if (c := reaches(m, m))]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_task_letters_are_spelled_once():
    spelled = [str(p.relative_to(PROJECT)) for pkg in PACKAGES for p in (PROJECT / pkg).rglob("*.py")
               if re.search(r"""\(\s*["']A["'],\s*["']B["'],\s*["']C["'],\s*["']D["']\s*\)|["']ABCD["']""", p.read_text())]
    assert spelled == ["mlu_training/benchmark.py"]


def test_every_setting_is_in_the_readme_table():
    from mlu_assets.settings import SETTINGS

    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Settings"):readme.index("## Where the data comes from")]
    assert [s.variable for s in SETTINGS if f"`{s.variable}`" not in table] == []


def test_typed_values_come_back_as_they_were_stored():
    import json

    from mlu_assets.io import from_json, to_json
    from mlu_training.data.release import Release
    from mlu_training.models.registry import BaseModelRef

    release = Release(Path("/x/release"), "../shared", True, "d" * 64, {"MLUBench": "e" * 64}, [("a", "ok")])
    back = from_json(Release, json.loads(to_json(release)))
    assert isinstance(back.root, Path) and back.root == release.root and back.tree_digests == release.tree_digests
    ref = BaseModelRef("tiny", "/m", "tiny", "k", "d", 10, None, "1", "models:/mlu-base-model/1", "r", False)
    assert from_json(BaseModelRef, json.loads(to_json(ref))) == ref
    assert from_json(None, {"a": 1}) == {"a": 1}  # an untyped value stays what it was
