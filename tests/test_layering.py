"""The package's layers: a lower module never imports a higher one (README, "The tree")."""

from __future__ import annotations

import ast
from pathlib import Path

import distillab

# Lowest first. Modules of one rank may import each other; a module imports only its rank and below.
RANKS = [
    ("compiling", "errors", "files", "machine", "markdown", "precision", "versions"),
    ("config", "config_schema", "process", "redaction"),
    ("models",),
    ("data",),
    ("objectives",),
    ("cost", "evaluation", "pruning", "quantization", "training"),
    ("tracking",),
    ("app_run", "entry", "stage_cache", "sweeps"),
    ("dashboard", "distill", "evaluate", "generate", "prune", "quantize", "report"),
    ("pipeline",),
    ("docsgen",),  # pages of the docs site generated from the configs and the tests' catalogue
]
RANK = {name: rank for rank, names in enumerate(RANKS) for name in names}
ROOT = Path(distillab.__file__).parent


def imported_parts(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, top-level distillab module)`` of every import, function-level ones included."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "distillab":
            parts = node.module.split(".")
            names = [a.name for a in node.names] if len(parts) == 1 else [parts[1]]
            found += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, a.name.split(".")[1]) for a in node.names if a.name.startswith("distillab.")
            ]
    return found


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower_ones():
    modules = {p.relative_to(ROOT).parts[0].removesuffix(".py") for p in ROOT.rglob("*.py")} - {"__init__"}
    assert modules <= set(RANK), f"give these a layer in RANKS: {sorted(modules - set(RANK))}"
    violations = []
    for path in sorted(ROOT.rglob("*.py")):
        own = path.relative_to(ROOT).parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        for line, name in imported_parts(ast.parse(path.read_text())):
            if name in RANK and RANK[name] > RANK[own]:
                violations.append(f"{path.relative_to(ROOT)}:{line} ({own}) imports {name}")
    assert not violations, "\n".join(violations)


def _function_lengths(name: str) -> dict[str, int]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == name:
                found[f"{path.relative_to(ROOT)}::{name}"] = node.end_lineno - node.lineno + 1
    return found


def test_entry_points_stay_thin():
    """Every app's run() reads as a table of contents (≤ 50 lines); the training step stays one
    screen (≤ 40): what a term needs is computed by signal providers, not branched on in the step."""
    runs = _function_lengths("run")
    assert len(runs) >= 6 and all(n <= 50 for n in runs.values()), runs
    assert all(n <= 40 for n in _function_lengths("_step").values()), _function_lengths("_step")
