"""The layout as a test: the regime core is a ground floor with no arrows up.

The core (features, model, filter, policy, engine, artifacts and the small pure helpers they use)
must not import the node wiring (``actors``, ``venues``, ``backtests``, ``marketdata``, ``bench``
or ``hmm_strategy``'s CLIs, config and strategy), so benchmarks, tests and the online trainer
can drive it without a node; and no core module reaches into another one's private names.
Parsed with ``ast``, so an import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CORE = (
    "features",
    "model",
    "filter",
    "policy",
    "engine",
    "artifacts",
    "atomic",
    "checkpoint",
    "sessions",
    "risk",
    "messages",
    "synthetic",
    "flags",
    "warm_start",
    "metric_rows",
)
WIRING = (
    "cli", "config", "live", "train", "strategy", "persistence", "trade_reports", "history",
    "timers",
)  # fmt: skip
FORBIDDEN_PACKAGES = ("actors", "venues", "backtests", "marketdata", "bench", "ops")
# The operations plane sits on top: it may use actors, hmm_strategy and venues; nothing of the
# node imports it (a node runs without it), and it does not reach into backtests or benchmarks.
OPS_MAY_IMPORT = ("actors", "hmm_strategy", "venues", "ops")
PACKAGES = ("hmm_strategy", "actors", "venues", "backtests", "marketdata", "bench", "ops")


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imported_modules(tree: ast.Module) -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, module, imported names) of every import statement, nested ones included."""
    found: list[tuple[int, str, tuple[str, ...]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = tuple(alias.name for alias in node.names)
            found.append((node.lineno, node.module, names))
            # ``from hmm_strategy import cli`` imports the module hmm_strategy.cli
            found.extend((node.lineno, f"{node.module}.{n}", ()) for n in names)
    return found


def _forbidden(module: str) -> bool:
    top = module.split(".")[0]
    if top in FORBIDDEN_PACKAGES:
        return True
    return any(module == f"hmm_strategy.{w}" for w in WIRING)


@pytest.mark.parametrize("name", CORE)
def test_core_imports_no_wiring(name: str) -> None:
    path = ROOT / "hmm_strategy" / f"{name}.py"
    bad = [
        f"{path.name}:{line} imports {module}"
        for line, module, _ in _imported_modules(_tree(path))
        if _forbidden(module)
    ]
    assert not bad, "the core must not import the wiring:\n" + "\n".join(bad)


@pytest.mark.parametrize("name", CORE)
def test_core_uses_no_private_names_of_other_modules(name: str) -> None:
    path = ROOT / "hmm_strategy" / f"{name}.py"
    tree = _tree(path)
    bad = [
        f"{path.name}:{line} imports {n} from {module}"
        for line, module, names in _imported_modules(tree)
        for n in names
        if module.startswith("hmm_strategy") and n.startswith("_") and not n.startswith("__")
    ]
    # A private attribute this module defines (assigns, or a method it declares) is its own.
    own = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
    } | {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and node.attr not in own
        ):
            bad.append(f"{path.name}:{node.lineno} reads {ast.unparse(node)}")
    assert not bad, "a core module reaches into another's private names:\n" + "\n".join(bad)


def test_every_core_module_is_listed() -> None:
    """A new hmm_strategy module is either core or wiring, decided here, not by accident."""
    modules = {p.stem for p in (ROOT / "hmm_strategy").glob("*.py")} - {"__init__"}
    assert modules == set(CORE) | set(WIRING)


# Who may import whom, package by package: arrows only point down this list.
# hmm_strategy's entry points (live, config) build nodes from venues; nothing below reaches up.
PACKAGE_ARROWS = {
    "hmm_strategy": ("actors", "backtests", "bench"),
    "marketdata": ("actors", "venues", "backtests", "bench"),
    "venues": ("actors", "backtests", "bench"),
    "actors": ("backtests", "bench"),
    "backtests": ("bench",),
}


@pytest.mark.parametrize("package", sorted(PACKAGE_ARROWS))
def test_packages_import_only_downwards(package: str) -> None:
    """The replay feed reads bars through marketdata, the live node writes its trade reports with
    hmm_strategy's writer, operator CLIs for actors live in actors: no package imports one above."""
    above = PACKAGE_ARROWS[package]
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, module, _ in _imported_modules(_tree(path))
        if module.split(".")[0] in above
    ]
    assert not bad, f"{package} imports a package above it:\n" + "\n".join(bad)


def test_nothing_of_the_node_imports_the_ops_plane() -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for package in PACKAGES
        if package != "ops"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, module, _ in _imported_modules(_tree(path))
        if module.split(".")[0] == "ops"
    ]
    assert not bad, "\n".join(bad)


def test_ops_imports_only_the_node_packages() -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / "ops").rglob("*.py"))
        for line, module, _ in _imported_modules(_tree(path))
        if module.split(".")[0] in PACKAGES and module.split(".")[0] not in OPS_MAY_IMPORT
    ]
    assert (ROOT / "ops" / "api.py").exists() and not bad, "\n".join(bad)
