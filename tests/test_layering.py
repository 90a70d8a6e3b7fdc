"""The package's layers: a lower module never imports a higher one (README, "The tree")."""

from __future__ import annotations

import ast
from pathlib import Path

import distillab

# Lowest first. Modules of one rank may import each other; a module imports only its rank and below.
RANKS = [
    ("errors", "files", "machine", "markdown", "precision"),
    ("config", "config_schema", "process", "redaction"),
    ("models",),
    ("data",),
    ("objectives",),
    ("evaluation", "pruning", "quantization", "training"),
    ("tracking",),
    ("app_run", "entry", "stage_cache", "sweeps"),
    ("distill", "evaluate", "generate", "prune", "quantize", "report"),
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
