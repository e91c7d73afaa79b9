"""README stays true: its example records have exactly the fields the stages write, in their order,
and CI runs the README's own install-and-test command."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from timewarp.core.schema import BenchmarkRecord, CaptionRecord, NormalAnnotation, PrefRecord, SFTRecord

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def test_example_records_have_the_written_fields_in_order():
    examples = dict(re.findall(r"^(\S+\.jsonl)\s+(\{.*\})$", README, re.M))
    want = {"captions/shuffled.jsonl": CaptionRecord, "sft/sft_explicit.jsonl": SFTRecord,
            "pref/pref_explicit.jsonl": PrefRecord, "benchmark/normal.jsonl": BenchmarkRecord}
    assert set(want) <= set(examples)
    for name, cls in want.items():
        assert list(json.loads(examples[name])) == fields(cls), name
    annotation = re.search(r"A normal annotation .*?```json\n(.*?)```", README, re.S).group(1)
    assert list(json.loads(annotation)) == fields(NormalAnnotation)


def test_ci_runs_the_readme_test_command():
    block = re.search(r"# 2\. [^\n]*\n([^\n]+)\n", README).group(1).strip()
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert block in ci and "pip install" in block and "-e ." in block and "pytest" in block
    first = re.search(r"# 1\. [^\n]*\n([^\n]+)\n", README).group(1)
    assert first.startswith("python3 -m pip install -e . && ")  # a fresh checkout installs the package first


@pytest.mark.video
def test_command_1_ends_with_the_report_and_the_viewer_and_says_where_they_are(tmp_path):
    """README command 1 as a new user runs it (the install left out, 3 sample videos instead of 12, run
    from this checkout): its last lines name the two pages, and both exist (before: it made nothing to
    look at)."""
    import os
    import subprocess

    first = re.search(r"# 1\. [^\n]*\n([^\n]+)\n", README).group(1)
    steps = first.split(" && ")
    assert steps[0] == "python3 -m pip install -e ." and steps[-2:] == [
        "python3 timewarp/report.py --root_dir sample_out", "python3 timewarp/viewer.py --root_dir sample_out"]
    cmd = " && ".join(steps[1:])
    cmd = cmd.replace("sample_data sample_finevideo", "sample_data sample_finevideo --videos 3")
    cmd = cmd.replace("sample_finevideo sample_out 12", "sample_finevideo sample_out 3")
    cmd = cmd.replace("./", f"{ROOT}/").replace("python3 timewarp/", f"python3 {ROOT}/timewarp/")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEWARP_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    r = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    last = r.stdout.strip().splitlines()[-2:]
    pages = ["sample_out/report/index.html", "sample_out/report/viewer/index.html"]
    for line, page in zip(last, pages):
        assert line.endswith("open in a browser: " + (tmp_path / page).as_uri()), last
        assert (tmp_path / page).is_file()
    for page in pages:
        assert f"`{page}`" in README
