"""README stays true: its example records have exactly the fields the stages write, in their order,
and CI runs the README's own install-and-test command."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from timewarp.schema import BenchmarkRecord, CaptionRecord, NormalAnnotation, PrefRecord, SFTRecord

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
