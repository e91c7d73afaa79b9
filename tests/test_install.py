"""The package is installed (`pip install -e .`) and every stage runs from anywhere.

Each command runs in a subprocess from an empty temp directory with no PYTHONPATH, so only the
installed package can answer: the console script `timewarp-<stage> --help` and the README's
`python timewarp/<group>/<stage>.py --help` (no sys.path patches left in the scripts).
"""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_INSTALLED = f"the timewarp package is not installed from this checkout: run python3 -m pip install -e {ROOT}"

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = None


def pyproject() -> dict:
    if tomllib is None:
        pytest.skip("tomllib needs Python >= 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TQDM_DISABLE"] = "1"
    return env


def run(cmd: list, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=120)


def _assigned(tree) -> set:
    """Names bound by module-level assignments (``run, main, build_parser = Stage.run, ...``)."""
    names = set()
    for n in tree.body:
        if isinstance(n, ast.Assign):
            for t in n.targets:
                names |= {e.id for e in (t.elts if isinstance(t, ast.Tuple) else [t]) if isinstance(e, ast.Name)}
    return names


def stage_modules() -> dict:
    """Every module of the package that has a ``main`` (``timewarp.x.y`` -> path)."""
    found = {}
    for path in sorted((ROOT / "timewarp").rglob("*.py")):
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body) or "main" in _assigned(tree):
            found[".".join(path.relative_to(ROOT).with_suffix("").parts)] = path
    return found


def test_the_installed_package_is_this_checkout(tmp_path):
    res = run([sys.executable, "-c", "import timewarp, sys; print(timewarp.__file__)"], tmp_path)
    assert res.returncode == 0, f"{NOT_INSTALLED}\n{res.stderr[-500:]}"
    assert Path(res.stdout.strip()).resolve() == ROOT / "timewarp" / "__init__.py", NOT_INSTALLED


def test_every_stage_has_a_console_script_and_requirements_match():
    meta = pyproject()["project"]
    scripts = meta["scripts"]
    targets = {v.split(":")[0] for v in scripts.values()}
    assert all(v.endswith(":main") for v in scripts.values())
    assert targets == set(stage_modules()), "pyproject [project.scripts] and the modules with main() differ"
    for name, target in scripts.items():  # timewarp-<module name with - for _>
        assert name == "timewarp-" + target.split(":")[0].rsplit(".", 1)[1].replace("_", "-")
    reqs = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert sorted(meta["dependencies"]) == sorted(reqs)
    assert meta["optional-dependencies"]["ray"] == [line for line in (ROOT / "requirements-ray.txt").read_text()
                                                    .splitlines() if line and not line.startswith("#")]


def test_every_console_script_and_stage_script_runs_help_from_anywhere(tmp_path):
    scripts_dir = sysconfig.get_path("scripts")
    search = os.pathsep.join(p for p in (scripts_dir, str(Path(sys.executable).parent), os.environ.get("PATH", "")) if p)
    scripts = pyproject()["project"]["scripts"]
    jobs = []
    for name, target in sorted(scripts.items()):
        exe = shutil.which(name, path=search)
        assert exe, f"console script {name} not found: {NOT_INSTALLED}"
        jobs.append((name, [exe, "--help"]))
    for module, path in stage_modules().items():  # the README's `python timewarp/<group>/<stage>.py`
        jobs.append((str(path.relative_to(ROOT)), [sys.executable, str(path), "--help"]))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda job: (job[0], run(job[1], tmp_path)), jobs))
    for what, res in results:
        assert res.returncode == 0, f"{what} --help failed: {res.stderr[-800:]}"
        assert re.search(r"^usage: ", res.stdout, re.M), f"{what} --help printed no usage:\n{res.stdout[:300]}"
        assert "--" in res.stdout  # it documents options
    assert len(results) == 2 * len(scripts) >= 16
