"""report.py renders index.html with non-empty PNG plots and the stats table of a real output folder."""
from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

from generated_output import build, fresh_copy
from timewarp import report
from timewarp.text.generation import Generation
from timewarp.core.layout import Layout

pytest.importorskip("matplotlib")  # requirements.txt
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def generated(processed, tmp_path_factory) -> Path:
    return build(processed, tmp_path_factory)


def test_report_on_a_real_output(generated, tmp_path):
    out = fresh_copy(generated, tmp_path / "out")
    layout = Layout(out)
    # a stage that used the model backend: its tokens and cost get a plot
    stats = json.loads(layout.stats_file("generate_sft_explicit").read_text())
    stats["llm_usage"] = {"requests": 3, "prompt_tokens": 1200, "completion_tokens": 300, "cost_usd": 0.0012}
    layout.stats_file("generate_sft_explicit").write_text(json.dumps(stats))
    index = report.run(report.Config(layout=layout))
    assert index == layout.report_file
    page = index.read_text()
    pngs = re.findall(r"<img src='([^']+)'", page)
    assert set(pngs) == {"clips_per_video.png", "clip_durations.png", "rejects.png", "question_kinds.png",
                         "key_changed.png", "tokens.png"}
    for name in pngs:
        data = (layout.report_dir / name).read_bytes()
        assert data[:8] == PNG and len(data) > 2000, name
    # the stats table has a row per stage with its numbers
    for stage in ("preprocess", "shuffle_clips", "generate_sft_explicit", "generate_shuffled_benchmark"):
        st = json.loads(layout.stats_file(stage).read_text())
        assert re.search(rf"<td>{stage}</td><td>{st['items_in']}</td><td>{st['items_out']}</td><td>{st['rejected']}</td>", page)
    data = report.collect(layout)
    assert sum(data["clips_per_video"]) == sum(len(json.loads(p.read_text())["clips"])
                                              for p in layout.normal_annotations_dir.glob("*.json"))
    shuffled = [json.loads(line) for line in layout.benchmark_shuffled_file.read_text().splitlines()]
    assert data["key_changed"]["all"] == (sum(r["key_changed"] for r in shuffled), len(shuffled))
    pref_rejects = [json.loads(line) for line in layout.rejects_file("generate_pref_explicit").read_text().splitlines()]
    assert pref_rejects and data["rejects"]["generate_pref_explicit: rejected equals chosen"] == \
        sum(r["reason"] == "rejected equals chosen" for r in pref_rejects)


def test_report_without_data_is_one_line_exit_2(tmp_path, capsys):
    assert report.main(["--root_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "setup_dataset.sh" in err[0]


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_stage_that_writes_stats_has_its_place_in_the_table():
    """STAGE_ORDER names every stage of the package (a stage left out would sort after export)."""
    package = Path(report.__file__).resolve().parent
    stages = {m[1] for p in package.rglob("*.py") for m in re.finditer(r'^STAGE = "(\w+)"', p.read_text(), re.M)}
    for p in package.rglob("*.py"):  # generation stages: the name of each Generation subclass of the package
        importlib.import_module(".".join(p.relative_to(package.parent).with_suffix("").parts))
    stages |= {cls.name for cls in _subclasses(Generation) if "name" in vars(cls) and cls.__module__.startswith("timewarp.")}
    assert stages and stages == set(report.STAGE_ORDER)


def test_shuffled_folder_names_are_honoured(generated, tmp_path):
    out = fresh_copy(generated, tmp_path / "out")
    n = len(list(Layout(out).shuffled_annotations_dir.glob("*.json")))
    (out / "shuffled").rename(out / "shuf2")
    assert report.main(["--root_dir", str(out), "--shuffled_dir_name", "shuf2"]) == 0
    page = Layout(out).report_file.read_text()
    assert n and f"shuffled videos: {n} (<code>shuf2/shuffled_annotations</code>)" in page
    assert report.main(["--root_dir", str(out)]) == 0
    assert "shuffled videos: 0 (<code>shuffled/shuffled_annotations</code>)" in Layout(out).report_file.read_text()
