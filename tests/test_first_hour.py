"""The README's two set-up commands hold on a fresh machine: CI runs exactly them (.ci/run), the [dev] extra installs
what the tests import, and with every extra, dataset and program a test may need hidden, the suite collects without
an error and those tests skip, each naming what to install or set (under CI=true such a skip fails)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import fail_skip_in_ci, train_env
from docs_shell import REPO, bash_blocks, logical_lines
from packaging.requirements import Requirement
from requires import EXTRAS, PROGRAMS

try:
    import tomllib
except ImportError:  # Python 3.10: pytest's own TOML reader
    import tomli as tomllib

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def readme_commands() -> list[str]:
    lines = [line for block in bash_blocks(REPO / "README.md") for line in logical_lines(block.text)]
    return [line.split("#", 1)[0].strip() for line in lines]


def test_ci_runs_the_readmes_install_and_test_commands_with_ci_true() -> None:
    commands = readme_commands()
    (install,) = [command for command in commands if command.startswith("pip install")]
    (test,) = [command for command in commands if command.split()[0] == "pytest"]
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert "export CI=true" in ci
    installs = [line for line in ci if " pip install " in f" {line}"]
    assert len(installs) == 1 and installs[0].endswith(install.removeprefix("pip install")), installs
    assert ci[-1].removeprefix("python3 -m ") == test, "the last step of .ci/run is the README's test command"


def requirement_closure(names: list[str]) -> set[str]:
    """Distributions installed for these requirements (their own requirements followed, markers for no extra)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        requirement = Requirement(todo.pop())
        key = requirement.name.lower().replace("_", "-")
        if key in seen or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        seen.add(key)
        try:
            todo += metadata.distribution(requirement.name).requires or []
        except metadata.PackageNotFoundError:
            continue
    return seen


def test_the_dev_extra_holds_every_extra_and_what_the_tests_import() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert set(EXTRAS) == set(extras) - {"dev"}, "tests/requires.py names the extras of pyproject.toml"
    (itself,) = [Requirement(r) for r in extras["dev"] if Requirement(r).name == "genlab"]
    assert itself.extras == set(EXTRAS), "[dev] installs every other extra"
    installed = requirement_closure(PYPROJECT["project"]["dependencies"] + [r for e in extras.values() for r in e])
    local = {path.stem for path in (REPO / "tests").rglob("*.py")} | {"offline", "genlab"}
    providers = metadata.packages_distributions()
    for path in (REPO / "tests").glob("*.py"):
        tree = ast.parse(path.read_text())
        fallbacks = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) for h in t.handlers for n in ast.walk(h)}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Import | ast.ImportFrom)
                and not getattr(node, "level", 0)
                and id(node) not in fallbacks
            ):
                for module in [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module]:
                    root = module.split(".")[0]
                    if root in sys.stdlib_module_names or root in local:
                        continue
                    dists = {d.lower().replace("_", "-") for d in providers.get(root, [])}
                    assert dists & installed, f"{path.name} imports {root}, which no genlab[dev] requirement installs"


#: Runs pytest with the given modules unimportable and programs not found (argv: modules, programs, pytest args).
HIDDEN_PYTEST = """
import importlib.abc, os, shutil, sys
modules, programs = set(sys.argv[1].split(",")), set(sys.argv[2].split(","))
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in modules:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Hide())
# Libraries that ask for a package's metadata before importing it (torchmetrics asks for transformers) see none either.
import importlib.metadata as metadata
found = metadata.Distribution.from_name.__func__
def from_name(cls, name):
    if name.lower().replace("-", "_").removeprefix("python_") in modules:
        raise metadata.PackageNotFoundError(name)
    return found(cls, name)
metadata.Distribution.from_name = classmethod(from_name)
which = shutil.which
shutil.which = lambda cmd, *a, **k: None if os.path.basename(cmd) in programs else which(cmd, *a, **k)
import pytest
sys.exit(pytest.main(sys.argv[3:]))
"""


def test_without_extras_data_or_chromium_the_tests_that_need_them_skip_naming_them(tmp_path: Path) -> None:
    """Collects the whole suite (an import of a missing extra at a module's top would be an error) and runs every
    test marked by tests/requires.py: each skips before its fixtures, saying what to install or set."""
    env = {k: v for k, v in train_env(tmp_path / "outputs").items() if k != "CI"}
    env["GENLAB_DATA_DIR"] = str(tmp_path / "no-data")
    (tmp_path / "no-data").mkdir()
    hidden = ",".join(module for modules in EXTRAS.values() for module in modules)
    args = ["-n", "0", "-q", "-rs", "-p", "no:cacheprovider", "-m", "needs", "tests"]
    process = subprocess.run(
        [sys.executable, "-c", HIDDEN_PYTEST, hidden, ",".join(PROGRAMS), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = process.stdout + process.stderr
    assert process.returncode == 0, output[-4000:]
    summary = output.strip().splitlines()[-1]
    assert "skipped" in summary and not re.search(r"passed|failed|error", summary), summary
    reasons = re.findall(r"^SKIPPED \[\d+\] \S+: (.*)$", output, flags=re.M)
    assert reasons and all(re.match(r"needs the (\w+ extra|dataset|program) ", r) for r in reasons), reasons
    for hint in ['".[chem]"', '".[music]"', '".[serve]"', "GENLAB_DATA_DIR"]:
        assert any(hint in reason for reason in reasons), f"no skip names {hint}"


@pytest.mark.parametrize("ci", ["true", ""])
def test_under_ci_true_a_skip_is_a_failure(monkeypatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    report = SimpleNamespace(skipped=True, outcome="skipped", longrepr=("tests/x.py", 1, "needs the music extra"))
    fail_skip_in_ci(report)
    assert report.outcome == ("failed" if ci else "skipped")
    assert not ci or "needs the music extra" in report.longrepr
