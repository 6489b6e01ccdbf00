"""The layer contract, checked on every import statement of the product packages:

    transforms  <-  store  <-  serving    <-  cli
                           <-  pipelines  <-  cli

store is the storage layout shared with Feast (Redis keys, values, RESP, the manifest, the
RESTORE writer), which pipelines writes and serving reads. serving never imports pipelines
and pipelines never imports serving; no product module imports the example project, the
benchmarks or the tests; no module imports a private name (``_name``) of a module in
another package.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("transforms", "store", "pipelines", "serving", "cli")
NEVER = ("feature_repo", "bench", "tests")
ALLOWED: dict[str, set[str]] = {
    "transforms": set(),
    "store": {"transforms"},
    "serving": {"transforms", "store"},
    "pipelines": {"transforms", "store"},
    "cli": {"transforms", "store", "serving", "pipelines", "bench"},  # bench: `skewless bench` only
}


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, a.name, []) for a in node.names)
    return out


def _modules() -> list[tuple[str, Path]]:
    return [
        (".".join(p.relative_to(ROOT).with_suffix("").parts), p)
        for pkg in PRODUCT
        for p in sorted((ROOT / pkg).rglob("*.py"))
    ]


def test_each_layer_imports_only_the_layers_below_it():
    bad = []
    for name, path in _modules():
        layer = name.partition(".")[0]
        for line, module, _ in _imports(path):
            top = module.partition(".")[0]
            if top in NEVER and (layer, top) != ("cli", "bench"):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
            elif top in PRODUCT and top != layer and top not in ALLOWED[layer]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not bad, "\n".join(bad)


def _package(module: str) -> str:
    return module.rpartition(".")[0]


def test_no_private_name_is_imported_from_another_package():
    bad = []
    for name, path in _modules():
        for line, module, names in _imports(path):
            if module.partition(".")[0] not in PRODUCT:
                continue
            parts = module.split(".")
            private_module = any(p.startswith("_") and not p.startswith("__") for p in parts[1:])
            if private_module and _package(module) != _package(name):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports private module {module}")
            for n in names:
                own = module if (ROOT / module.replace(".", "/")).is_dir() else _package(module)
                if n.startswith("_") and not n.startswith("__") and own != _package(name):
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}.{n}")
    assert not bad, "\n".join(bad)
