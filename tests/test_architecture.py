"""The layers of docs/architecture.md hold: no module imports a layer above its own.

Every import is read from the source (ast), at module level and inside functions alike,
so a lazy import that runs back up the layers is caught too. A new module must be given
its layer here and in docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Source folder -> the package it installs as (pyproject maps training/ and export/).
PACKAGES = {
    "keras_sep": "keras_sep",
    "training": "keras_sep.training",
    "export": "keras_sep.export",
}

# Bottom to top, as in docs/architecture.md. A module may import its own layer and those
# below. A package entry ("keras_sep.data") covers every module inside it.
LAYERS = [
    (
        "foundation",
        [
            "keras_sep.version",
            "keras_sep.errors",
            "keras_sep.files",
            "keras_sep.progress",
            "keras_sep.native_logs",
            "keras_sep.threads",
        ],
    ),
    ("config", ["keras_sep.config", "keras_sep.precision", "keras_sep.tuning"]),
    ("layers", ["keras_sep.layers"]),
    ("blocks", ["keras_sep.blocks"]),
    ("models", ["keras_sep.models", "keras_sep.analysis"]),
    ("folder", ["keras_sep.folder"]),
    ("audio", ["keras_sep.audio"]),
    ("gate", ["keras_sep.gate"]),
    ("mask", ["keras_sep.mask"]),
    ("separate", ["keras_sep.separate", "keras_sep.batch"]),
    ("api", ["keras_sep"]),  # the package root re-exports build, load, save, separate
    ("data", ["keras_sep.data"]),
    ("metrics", ["keras_sep.metrics", "keras_sep.baselines"]),
    ("report", ["keras_sep.report", "keras_sep.spectrograms"]),
    (
        "evaluate",
        ["keras_sep.evaluate", "keras_sep.demo", "keras_sep.serving", "keras_sep.warm_start"],
    ),
    ("cli", ["keras_sep.cli"]),
    ("training", ["keras_sep.training"]),
    ("export", ["keras_sep.export"]),
]
# training and export both sit on top of the library and never import each other.
TOP = {"training", "export"}


def layer_of(module: str) -> int:
    """The index in LAYERS of ``module`` (its own entry, else its package's)."""
    names = {name: i for i, (_, members) in enumerate(LAYERS) for name in members}
    parts = module.split(".")
    # The package root covers itself only: a new top-level module needs its own entry.
    for end in range(len(parts), 1, -1):
        if ".".join(parts[:end]) in names:
            return names[".".join(parts[:end])]
    if module in names:
        return names[module]
    raise KeyError(module)


def modules() -> dict[str, Path]:
    """Every module of the three packages, by the name it is imported under."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imports(module: str, path: Path) -> set[str]:
    """The keras_sep modules that ``path`` imports, anywhere in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from keras_sep import evaluate` imports a submodule, not a name of the root.
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return {name for name in found if name == "keras_sep" or name.startswith("keras_sep.")}


MODULES = modules()


def violations(module: str, targets: set[str]) -> list[str]:
    """What is wrong with ``module`` importing ``targets``, one line each."""
    own, wrong = layer_of(module), []
    for target in sorted(targets):
        theirs = layer_of(target)
        up, down = LAYERS[own][0], LAYERS[theirs][0]
        if down in TOP and up not in TOP and module != "keras_sep.cli":
            # The one door: a CLI subcommand imports its package inside its function.
            wrong.append(f"{module} imports {target}: of the library only keras_sep.cli may")
        elif down in TOP and up in TOP and up != down:
            wrong.append(f"{module} ({up}) imports {target} ({down}): they never meet")
        elif theirs > own and down not in TOP:
            wrong.append(f"{module} ({up}) imports {target} ({down}), a higher layer")
    return wrong


def test_every_module_has_a_layer():
    missing = []
    for module in MODULES:
        try:
            layer_of(module)
        except KeyError:
            missing.append(module)
    assert not missing, f"give {missing} a layer in LAYERS and in docs/architecture.md"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_runs_up_the_layers(module):
    wrong = violations(module, imports(module, MODULES[module]))
    assert not wrong, "\n".join(wrong) + "\n(see docs/architecture.md)"


def test_the_rules_catch_what_they_forbid():
    # A checker that finds nothing would pass the test above.
    assert violations("keras_sep.config", {"keras_sep.models"})
    assert violations("keras_sep.folder", {"keras_sep"})  # the root runs back up
    assert violations("keras_sep.evaluate", {"keras_sep.training.train"})
    assert violations("keras_sep.training.train", {"keras_sep.export.artifacts"})
    assert not violations("keras_sep.cli", {"keras_sep.training.train", "keras_sep.export"})
    assert not violations("keras_sep.export.artifacts", {"keras_sep.folder", "keras_sep"})


def test_the_walker_sees_lazy_and_relative_imports():
    cli = imports("keras_sep.cli", MODULES["keras_sep.cli"])
    assert {"keras_sep.training.train", "keras_sep.evaluate"} <= cli
    tflite = imports("keras_sep.export.tflite", MODULES["keras_sep.export.tflite"])
    assert "keras_sep.export.checks" in tflite
    assert layer_of("keras_sep.data.cache") == layer_of("keras_sep.data")
