"""The house rules of docs/architecture.md, checked: import contracts (import-linter) and module size.

The contracts live in pyproject.toml ([tool.importlinter]); `lint-imports` checks them statically
(no project code runs), about a second for the whole tree. Each contract is its own test, so one
broken rule does not hide the others, and the bite tests prove a contract fails when someone adds
a forbidden import to a copy of the tree.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nas", "compress", "reports", "search_spaces")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MAX_LINES = 400

# Known violations, each with its reason; empty since issue 12 landed. A non-strict xfail would let
# an entry outlive its violation, so keep these empty unless a violation is being fixed right now.
PENDING_CONTRACTS: dict[str, str] = {}
PENDING_SIZES: dict[str, str] = {}


def _contracts() -> dict[str, str]:
    """Contract id -> name, as pyproject.toml declares them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {c["id"]: c["name"] for c in config["tool"]["importlinter"]["contracts"]}


def lint_imports(cwd: Path, *contracts: str) -> subprocess.CompletedProcess:
    """The venv's console script, as `make test` and a developer run it, from ``cwd``."""
    if not LINT_IMPORTS.exists():
        pytest.skip(f"{LINT_IMPORTS} missing: install the dev extra (pip install -e .[dev])")
    args = [str(LINT_IMPORTS), "--no-cache", "--no-logo"]
    for contract in contracts:
        args += ["--contract", contract]
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def _pending(table: dict[str, str], key: str) -> list:
    reason = table.get(key)
    return [pytest.mark.xfail(strict=False, reason=reason)] if reason else []


@pytest.mark.parametrize("contract", [pytest.param(c, marks=_pending(PENDING_CONTRACTS, c)) for c in _contracts()])
def test_import_contract_is_kept(contract):
    result = lint_imports(ROOT, contract)
    assert result.returncode == 0, result.stdout + result.stderr


def test_contracts_cover_the_rules_the_docs_state():
    """docs/architecture.md names these contracts; renaming or dropping one must be deliberate."""
    assert set(_contracts()) == {"layers", "optuna-adapter", "optuna-facade", "ray-adapter", "pruning",
                                    "reports-pure", "commands", "cycles"}


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    """The four packages and pyproject.toml, copied: a place to break the rules safely."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _add_import(tree: Path, module: str, line: str) -> None:
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # added by the test: must break a contract\n")


def _broken(output: str, contract: str) -> bool:
    """lint-imports wraps long names at 80 columns: compare without whitespace."""
    flat = "".join(output.split())
    return "".join(_contracts()[contract].split()) + "BROKEN" in flat


def test_optuna_in_a_training_module_breaks_the_contracts(tree_copy):
    _add_import(tree_copy, "nas/train/trainer.py", "import optuna")
    result = lint_imports(tree_copy)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert _broken(output, "optuna-adapter") and "nas.train.trainer -> optuna" in output, output


BITES = {  # contract -> (module, added import, the line lint-imports must name)
    "layers": ("nas/data/loading.py", "import nas.engine.trial", "nas.data.loading -> nas.engine.trial"),
    "reports-pure": ("reports/fmt.py", "import torch", "reports.fmt -> torch"),
    "commands": ("nas/cli/export.py", "import nas.cli.predict", "nas.cli.export -> nas.cli.predict"),
    "pruning": ("search_spaces/resunet/ops.py", "import torch_pruning", "search_spaces.resunet.ops -> torch_pruning"),
    "ray-adapter": ("nas/results/pareto.py", "import ray", "nas.results.pareto -> ray"),
    "cycles": ("nas/data/synthetic.py", "import nas.data.loading", ".synthetic -> .loading"),
    "optuna-facade": ("nas/run/outputs.py", "import nas.engine.optuna_adapter.study",
                      "nas.run.outputs -> nas.engine.optuna_adapter.study"),
}


def test_every_other_contract_bites(tree_copy):
    """One forbidden import per contract, in one copy of the tree: each contract breaks, naming it."""
    for module, line, _ in BITES.values():
        _add_import(tree_copy, module, line)
    result = lint_imports(tree_copy, *BITES)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    for contract, (_, _, named) in BITES.items():
        assert _broken(output, contract), f"{contract} kept:\n{output}"
        assert named in output, f"{named!r} not named:\n{output}"


def _layers() -> list[str]:
    """The modules the layers contract places, siblings split out of their ``a | b`` layer."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    layers = next(c for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "layers")["layers"]
    return [name.strip() for layer in layers for name in layer.split("|")]


def test_every_part_of_nas_has_a_layer():
    """A new package under nas/ (as nas.stages was) must be placed in the layers, or nothing checks it."""
    parts = {f"nas.{p.stem if p.suffix else p.name}" for p in (ROOT / "nas").iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert parts - set(_layers()) == set()


def test_the_stages_sit_between_the_run_and_the_engine(tree_copy):
    """The stages use the engine and are used by the run: the reverse of either breaks the layers."""
    _add_import(tree_copy, "nas/stages/family_planning.py", "import nas.run.family_run")
    _add_import(tree_copy, "nas/engine/policy.py", "import nas.stages.finalist_training")
    result = lint_imports(tree_copy, "layers")
    output = result.stdout + result.stderr
    assert result.returncode == 1 and _broken(output, "layers"), output
    for named in ("nas.stages.family_planning -> nas.run.family_run",
                  "nas.engine.policy -> nas.stages.finalist_training"):
        assert named in output, f"{named!r} not named:\n{output}"


def _modules() -> list[str]:
    """The packages' modules, and the benchmark scripts with their parts' packages (same standard)."""
    return sorted(str(p.relative_to(ROOT)) for package in (*PACKAGES, "benchmarks")
                  for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("module", [pytest.param(m, marks=_pending(PENDING_SIZES, m)) for m in _modules()])
def test_module_is_under_the_size_limit(module):
    lines = len((ROOT / module).read_text().splitlines())
    assert lines <= MAX_LINES, f"{module}: {lines} lines, over {MAX_LINES}: split it by concept"


# A process started as ``python -m nas.cli.search`` is a dependency no contract can see (issue 27):
# the workers run a function handed over as an object instead (nas.engine.workers).
STARTED_BY_NAME = re.compile(r"""["']-[mc]["']\s*,\s*["'](?:import\s+|from\s+)?(?:nas|compress|reports|search_spaces)\b""")


def test_no_module_starts_a_project_module_by_name():
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}" for package in PACKAGES
             for path in sorted((ROOT / package).rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1) if STARTED_BY_NAME.search(line)]
    assert found == [], "\n".join(found)
