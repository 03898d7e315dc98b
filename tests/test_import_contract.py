"""The import contract of `operator/eft` (docs/architecture.md), checked on the source with `ast`.

Layers, bottom up; a package may import its own modules and those of the layers it names, nothing else:

    errors, clock,       nothing from eft
    seeding
    api                  errors                       (the resource model sits at the bottom)
    shared               api + shared                 records, retrieval, corpus, stages, hashing, progress,
                                                      terminal, models, embedding, embedding_cache
    stage packages       api + shared                 sdg, prep, train, evaluate, export, verify: none
                                                      imports another
    serve                api + shared + export's artifact readers (export.artifact, export.tensorrt,
                                                      export.openvino)
    controller           api, hashing, clock, errors  no stage package, no serve, no shared pipeline code
    entry points         anything                     cli, runner, report_table

Imports inside functions count too (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

EFT = Path(__file__).resolve().parents[1] / "operator" / "eft"

FOUNDATION = {"errors", "clock", "seeding"}
SHARED = {"records", "retrieval", "corpus", "stages", "hashing", "progress", "terminal", "models", "embedding",
          "embedding_cache"}
STAGE_PACKAGES = {"sdg", "prep", "train", "evaluate", "export", "verify"}
ENTRY_POINTS = {"cli", "runner", "report_table"}

ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "clock": set(),
    "seeding": set(),
    "api": {"errors"},
    **{s: {"api"} | SHARED | FOUNDATION for s in SHARED},
    **{s: {"api"} | SHARED | FOUNDATION for s in STAGE_PACKAGES},
    "serve": {"api"} | SHARED | FOUNDATION,
    "controller": {"api", "hashing"} | FOUNDATION,
}
#: Module-level exceptions, each with its reason.
EXCEPTIONS = {
    ("serve", "eft.export.artifact"): "the server reads the export folder that export writes",
    ("serve", "eft.export.tensorrt"): "the server runs the TensorRT engine that export builds",
    ("serve", "eft.export.openvino"): "the server runs the OpenVINO int8 variant that export builds",
}


def _top(path: Path) -> str:
    rel = path.relative_to(EFT)
    return rel.parts[0].removesuffix(".py") if rel.parts[0] != "__init__.py" else "eft"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every `eft.*` import in a file, lazy ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "eft":
                out += [(node.lineno, f"eft.{a.name}") for a in node.names]
            elif node.module.startswith("eft."):
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("eft.")]
    return out


def _violations() -> list[str]:
    bad = []
    for path in sorted(EFT.rglob("*.py")):
        top = _top(path)
        if top in ENTRY_POINTS or top == "eft":
            continue
        assert top in ALLOWED, f"{path.relative_to(EFT)}: package {top!r} has no place in the contract"
        for line, module in _imports(path):
            target = module.split(".")[1]
            if target == top or target in ALLOWED[top]:
                continue
            if any(top == pkg and (module == mod or module.startswith(mod + ".")) for pkg, mod in EXCEPTIONS):
                continue
            bad.append(f"{path.relative_to(EFT.parent)}:{line}: {top} imports {module}")
    return bad


def test_every_import_follows_the_layers():
    assert _violations() == []


def test_the_checker_sees_lazy_and_plain_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import eft.sdg.llm\nfrom eft import api\n\ndef f():\n    from eft.prep.mining import x\n")
    assert [m for _, m in _imports(probe)] == ["eft.sdg.llm", "eft.api", "eft.prep.mining"]


@pytest.mark.parametrize("package", sorted(STAGE_PACKAGES | SHARED | {"api", "controller", "serve"}))
def test_every_package_is_in_the_contract(package):
    assert (EFT / package).is_dir() or (EFT / f"{package}.py").is_file(), f"{package} is gone: update the contract"
