"""The layout's promise: arrows only point down (tools -> engine -> solver -> config), no
import circle, and checking a config's values needs no torch."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


FILES = sorted((REPO / "pet").rglob("*.py")) + sorted((REPO / "tools").glob("*.py"))
MODULES = {module_name(path): path for path in FILES}


def imports_of(path: Path):
    """Every module ``path`` imports (at any depth of the file, lazy imports included);
    ``from package import submodule`` counts as the submodule alone (a package's parents are
    always imported first, which is no dependency of the importer)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            submodules = [f"{node.module}.{alias.name}" for alias in node.names
                          if f"{node.module}.{alias.name}" in MODULES]
            yield from submodules
            if len(submodules) < len(node.names):
                yield node.module
# module -> the project modules it imports
GRAPH = {name: {m for m in imports_of(path) if m in MODULES and m != name}
         for name, path in MODULES.items()}


def test_the_graph_is_not_empty():
    assert GRAPH["pet.lib.utils.optimizer"] >= {"pet.lib.utils.param_groups", "pet.lib.config.validate"}
    assert "pet.engine.trainer" in GRAPH["tools.train_net"] or "pet.engine" in GRAPH["tools.train_net"]


def test_no_import_circle():
    state = {}

    def visit(name, path):
        state[name] = "open"
        for dep in sorted(GRAPH[name]):
            if state.get(dep) == "open":
                pytest.fail("import circle: " + " -> ".join(path + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])


# Each layer and what it must never import.
FORBIDDEN = {
    "pet.lib.config": ("pet.lib.utils", "pet.engine", "pet.data", "pet.models", "pet.bench",
                       "pet.reports", "tools", "torch"),
    "pet.lib.utils": ("pet.engine", "pet.data", "pet.models", "pet.bench", "pet.reports", "tools"),
    "pet.data": ("pet.engine", "pet.models", "pet.bench", "pet.reports", "tools"),
    "pet.models": ("pet.engine", "pet.bench", "pet.reports", "tools"),
    "pet.engine": ("pet.bench", "pet.reports", "tools"),
    "pet.reports": ("pet.engine", "pet.bench", "tools"),
    "pet.bench": ("tools",),
}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_arrows_only_point_down(layer):
    for name, path in MODULES.items():
        if name != layer and not name.startswith(layer + "."):
            continue
        for imported in imports_of(path):
            for banned in FORBIDDEN[layer]:
                assert not (imported == banned or imported.startswith(banned + ".")), (
                    f"{path.relative_to(REPO)} imports {imported}")


@pytest.mark.slow
def test_checking_a_config_loads_no_torch():
    code = ("import sys; from pet.lib.config import load_cfg; "
            "from pet.lib.config.validate import validate_optimizer, validate_scheduler; "
            "from pet.lib.config.validate_job import validate_model; "
            "cfg = load_cfg(None, ['SOLVER.OPTIMIZER.BASE_LR', '0.5']); "
            "validate_optimizer(cfg.SOLVER.OPTIMIZER); validate_scheduler(cfg.SOLVER.SCHEDULER); "
            "validate_model(cfg.MODEL); print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_a_run_that_does_not_shard_imports_no_dtensor_fsdp_or_dcp():
    """Their import is half a second of every start (a refused config answered in 1.3 s, was
    2.0 s): only the runs that shard load them (see pet.lib.utils.shards)."""
    heavy = ("torch.distributed.tensor", "torch.distributed.fsdp", "torch.distributed.checkpoint")
    code = (f"import sys; import pet.engine.training_run, pet.engine.checkpointer; "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_no_source_file_is_much_over_400_lines():
    long = {str(path.relative_to(REPO)): n for path in FILES
            if (n := len(path.read_text().splitlines())) > 420}
    assert not long
