"""publish.py: a hub-ready folder whose every config loads with datasets.load_dataset, whose card's numbers are
the data's (counted here from the source JSONL, not from what publish wrote), whose media paths resolve inside
the folder, and whose bytes do not change from one run to the next."""
from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import pytest
import yaml

from generated_output import build, fresh_copy
from timewarp import publish
from timewarp.core.layout import Layout
from timewarp.core.parallel import Executor
from timewarp.pref_data import combine_pref
from timewarp.sample_data import frame_id as sample_frame_id
from timewarp.core.store import read_json, read_jsonl, write_jsonl

datasets = pytest.importorskip("datasets")  # requirements-dev.txt

CONFIG_SOURCES = {  # config -> source files (relative to root_dir), counted independently below
    "captions": ["captions/normal.jsonl", "captions/shuffled.jsonl"],
    "sft": ["sft/sft_explicit.jsonl"],
    "pref_explicit": ["pref/pref_explicit.jsonl"],
    "pref_implicit": ["pref/pref_implicit.jsonl"],
    "pref_combined": ["pref/pref_combined.jsonl"],
    "benchmark_normal": ["benchmark/normal.jsonl"],
    "benchmark_shuffled": ["benchmark/shuffled.jsonl"],
}


@pytest.fixture(scope="module")
def full_output(processed, tmp_path_factory) -> Path:
    """The generated output plus implicit pairs (written as the vision stage writes them) and combined pairs."""
    out = fresh_copy(build(processed, tmp_path_factory), tmp_path_factory.mktemp("pub") / "out")
    layout = Layout(out)
    rows = []
    for vid in layout.normal_ids():
        a = read_json(layout.normal_annotation(vid))
        if a["split"] != "train":
            continue
        n = a["frame_count"]
        frames = [n // 8 * k for k in range(8)]
        rows.append({"pid": f"{vid}/implicit/reverse", "id": vid, "split": "train", "video": a["video"],
                     "prompt": "Describe this video in detail and in temporal order.",
                     "chosen": " then ".join(c["caption"] for c in a["clips"]),
                     "rejected": " then ".join(c["caption"] for c in reversed(a["clips"])),
                     "rejected_mode": "corrupt", "rejected_prompt": "Describe this video in detail and in temporal order.",
                     "corruption": {"name": "reverse", "params": {"seed": 7}}, "frames": frames,
                     "rejected_frames": frames[::-1], "distance": 0.5, "model": "fake-vlm"})
    assert rows
    write_jsonl(layout.pref_implicit_file, rows)
    combine_pref.run(combine_pref.Config(layout=layout))
    return out


def publish_to(root: Path, dest: Path, workers: int = 1, **options) -> dict:
    return publish.run(publish.Config(layout=Layout(root), dest=str(dest), **options), Executor(workers=workers))


def count_by_split(root: Path, files: list[str]) -> dict:
    c = collections.Counter()
    for f in files:
        for line in (root / f).read_text(encoding="utf-8").splitlines():
            if line.strip():
                c[json.loads(line).get("split", "train")] += 1
    return dict(c)


def expected_counts(root: Path) -> dict:
    want = {name: count_by_split(root, files) for name, files in CONFIG_SOURCES.items()}
    for name, folder in (("annotations", "normal/annotations"), ("shuffled_annotations", "shuffled/shuffled_annotations")):
        want[name] = dict(collections.Counter(json.loads(p.read_text())["split"] for p in (root / folder).glob("*.json")))
    return want


def card_header(dest: Path) -> tuple[dict, str]:
    text = (dest / "README.md").read_text(encoding="utf-8")
    m = re.match(r"---\n(.*?)\n---\n(.*)", text, re.S)
    assert m, "card has no YAML header"
    return yaml.safe_load(m.group(1)), m.group(2)


def tree(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_every_config_loads_and_the_card_counts_are_the_data(full_output, tmp_path):
    dest = tmp_path / "hub"
    res = publish_to(full_output, dest)
    assert res["errors"] == []
    want = expected_counts(full_output)
    assert set(want) == {c.name for c in publish.CONFIGS}
    header, body = card_header(dest)
    assert header["license"] == "cc-by-4.0" and "video-text-to-text" in header["task_categories"]
    assert "Creative Commons" in header["extra_gated_prompt"] and "FineVideo" in body
    assert "hf upload" in body and "--repo-type dataset" in body
    assert str(full_output) not in (dest / "README.md").read_text()  # no path of this machine
    infos = {i["config_name"]: i for i in header["dataset_info"]}
    assert [c["config_name"] for c in header["configs"]] == [c.name for c in publish.CONFIGS]
    for name, counts in want.items():
        ds = datasets.load_dataset(str(dest), name, cache_dir=str(tmp_path / "cache"))
        assert {s: len(d) for s, d in ds.items()} == counts, name
        assert {s["name"]: s["num_examples"] for s in infos[name]["splits"]} == counts, name
        # the table in the card's text says the same
        row = re.search(rf"^\| {name} \| (\d+) \| (\d+) \| (\d+) \|$", body, re.M)
        assert row and (int(row[1]), int(row[2])) == (counts.get("train", 0), counts.get("test", 0)), name
        # the features the card declares are the ones the data has
        declared = datasets.Features._from_yaml_list(infos[name]["features"])
        for split in ds.values():
            assert split.features == declared, name
            for r in split:
                for col in ("video", "normal_video"):
                    if col in r:  # every media path resolves inside the folder, to the same bytes
                        assert not Path(r[col]).is_absolute()
                        assert (dest / r[col]).read_bytes() == (full_output / r[col]).read_bytes()
    # the answers are the source's, unchanged
    src = {r["qid"]: r for r in read_jsonl(full_output / "benchmark/shuffled.jsonl")}
    got = datasets.load_dataset(str(dest), "benchmark_shuffled", split="test", cache_dir=str(tmp_path / "cache"))
    assert {r["qid"]: (r["answer"], r["key_changed"], r["options"]) for r in got} == \
        {q: (r["answer"], r["key_changed"], r["options"]) for q, r in src.items()}
    imp = datasets.load_dataset(str(dest), "pref_implicit", split="train", cache_dir=str(tmp_path / "cache"))
    assert json.loads(imp[0]["corruption"]) == {"name": "reverse", "params": {"seed": 7}}
    # method, seed and options come from stats/
    assert "Seed(s) used: 42" in body and "`permutations_per_video=1`" in body and "`qa_per_video=3`" in body


def test_same_outputs_give_the_same_bytes(full_output, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    publish_to(full_output, a, copy=True)
    publish_to(full_output, b)
    first = tree(a)
    assert first == tree(b)
    publish_to(full_output, a)  # over an earlier publish: replaced, same bytes, nothing left beside it
    assert tree(a) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_frames_instead_of_videos(full_output, tmp_path):
    dest = tmp_path / "hub"
    assert publish.main(["--root_dir", str(full_output), "--dest", str(dest), "--frames", "3", "--workers", "2"]) == 0
    assert not any(dest.rglob("*.mp4"))
    layout = Layout(full_output)
    pref = datasets.load_dataset(str(dest), "pref_explicit", split="train", cache_dir=str(tmp_path / "cache"))
    assert "video" not in pref.column_names
    import cv2

    for r in datasets.load_dataset(str(dest), "annotations", cache_dir=str(tmp_path / "cache"))["train"]:
        ann = read_json(layout.normal_annotation(r["id"]))
        assert len(r["video_frames"]) == 3
        for f in r["video_frames"]:  # frame k of a normal video shows source frame k (drawn into it)
            k = int(Path(f).stem)
            assert 0 <= k < ann["frame_count"] and sample_frame_id(cv2.imread(str(dest / f))) == k
    for r in pref:
        assert len(r["video_frames"]) == 3 and all((dest / f).is_file() for f in r["video_frames"])


def test_bad_inputs(full_output, tmp_path, capsys):
    out = fresh_copy(full_output, tmp_path / "out")
    lines = (out / "sft/sft_explicit.jsonl").read_text().splitlines()
    lines[1] = lines[1][:20]
    (out / "sft/sft_explicit.jsonl").write_text("\n".join(lines) + "\n")
    dest = tmp_path / "hub"
    assert publish.main(["--root_dir", str(out), "--dest", str(dest)]) == 1  # the rest is still published
    assert "sft_explicit.jsonl: line 2 is not valid JSON" in capsys.readouterr().err
    header, body = card_header(dest)
    assert "sft" not in [c["config_name"] for c in header["configs"]] and "line 2 is not valid JSON" in body
    assert len(datasets.load_dataset(str(dest), "pref_explicit", split="train", cache_dir=str(tmp_path / "c"))) > 0
    capsys.readouterr()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for argv, words in ((["--root_dir", str(out), "--dest", str(foreign)], "not an earlier publish.py"),
                        (["--root_dir", str(tmp_path / "nope"), "--dest", str(dest)], "does not exist"),
                        (["--root_dir", str(out), "--dest", str(out / "normal" / "x")], "inside a pipeline folder"),
                        (["--root_dir", str(out), "--dest", str(dest), "--frames", "0"], "--frames")):
        assert publish.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_a_video_whose_frames_fail_is_a_problem_not_a_crash(full_output, tmp_path, capsys):
    out = fresh_copy(full_output, tmp_path / "out")
    layout = Layout(out)
    vid = layout.normal_ids()[0]
    ann = read_json(layout.normal_annotation(vid))
    ann["frame_count"] += 500  # the annotation promises frames the video does not have
    layout.normal_annotation(vid).write_text(json.dumps(ann))
    dest = tmp_path / "hub"
    assert publish.main(["--root_dir", str(out), "--dest", str(dest), "--frames", "3", "--workers", "2"]) == 1
    problem = f"frames of {ann['video']} failed: video shorter than expected"
    assert problem in capsys.readouterr().err
    header, body = card_header(dest)
    assert problem in body
    ds = datasets.load_dataset(str(dest), "annotations", cache_dir=str(tmp_path / "cache"))
    frames = {r["id"]: r["video_frames"] for split in ds.values() for r in split}
    assert frames[vid] == [] and all(len(v) == 3 for k, v in frames.items() if k != vid)
