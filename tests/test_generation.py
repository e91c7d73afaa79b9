"""The six data-generation stages on real preprocessed output (the session fixture ``processed``).

Every answer, rejected answer and benchmark key is recomputed here by a small oracle of the test's
own, from clip *times* in the annotations (real order) and the shuffled annotation's timeline
(shuffled order): nothing from timewarp.text.temporal is used to get expected values.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from stages import run_stage  # noqa: E402
from timewarp.benchmark import generate_normal_benchmark, generate_shuffled_benchmark
from timewarp.pref_data import (generate_pref_explicit, generate_sft_explicit, merge_normal_captions,
                                merge_shuffled_captions)
from timewarp.core.errors import ItemError
from timewarp.text.generation import Draft, Generation
from timewarp.core.stage import StageConfig, option

STAGES_OUT = ["captions/normal.jsonl", "captions/shuffled.jsonl", "sft/sft_explicit.jsonl", "pref/pref_explicit.jsonl",
              "benchmark/normal.jsonl", "benchmark/shuffled.jsonl"]


def copy_root(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.mp4"))  # videos are not read by these stages
    return dst


def run_all(root: Path, **pref) -> None:
    run_stage(merge_normal_captions, root)
    run_stage(merge_shuffled_captions, root)
    run_stage(generate_sft_explicit, root)
    run_stage(generate_pref_explicit, root, **pref)
    run_stage(generate_normal_benchmark, root)
    run_stage(generate_shuffled_benchmark, root)


def rows(root: Path, rel: str) -> list[dict]:
    return [json.loads(line) for line in (root / rel).read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- the test's own oracle

def real_order(ann: dict) -> list[int]:
    """Clip indices sorted by their start time on the normal video."""
    return [c["index"] for c in sorted(ann["clips"], key=lambda c: c["start"])]


def shuffled_order(sh: dict) -> list[int]:
    """Real-order clip indices as the shuffled video shows them (by start on the shuffled timeline)."""
    return [c["source_index"] for c in sorted(sh["clips"], key=lambda c: c["start"])]


def oracle(kind: str, events: list[int], order: list[int]) -> list[int]:
    rank = {clip: r for r, clip in enumerate(order)}
    if kind == "first":
        return [order[0]]
    if kind == "last":
        return [order[-1]]
    if kind in ("after", "before"):
        r = rank[events[0]] + (1 if kind == "after" else -1)
        return [order[r]] if 0 <= r < len(order) else []
    if kind in ("which_first", "earliest_of"):
        return [sorted(events, key=lambda e: rank[e])[0]]
    if kind == "latest_of":
        return [sorted(events, key=lambda e: rank[e])[-1]]
    if kind == "order_three":
        return sorted(events, key=lambda e: rank[e])
    raise AssertionError(f"unexpected kind {kind}")


def norm(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]+", "", text.lower())


def mentions(text: str, caption: str) -> bool:
    return norm(caption.rstrip(".")) in norm(text)


def text_states(text: str, clips: list[int], captions: list[str]) -> bool:
    """The text names exactly these clips' captions, in this order (or 'nothing' when none)."""
    if not clips:
        return "nothing" in text.lower() and not any(mentions(text, c) for c in captions)
    t = norm(text)
    where = [t.find(norm(captions[c].rstrip("."))) for c in clips]
    return all(w >= 0 for w in where) and where == sorted(where)


def load(root: Path, rel: str) -> dict:
    return json.loads((root / rel).read_text())


# ---------------------------------------------------------------- fixtures

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "cyan", "pink", "brown"]
ACTIONS = ["slides left", "bounces", "spins slowly", "grows", "fades out", "jumps twice", "shrinks", "waves"]


def synthetic_root(root: Path, videos: int = 40, seed: int = 3) -> Path:
    """Annotations only (these stages never open a video): 2-8 clips, both splits, one video whose
    captions repeat; shuffled annotations made by shuffle_clips' own functions (the producer)."""
    import random

    from timewarp.core.layout import Layout
    from timewarp.preprocess.shuffle_clips import draw_permutations, shuffled_annotation
    from timewarp.core.schema import Clip, NormalAnnotation
    from timewarp.core.store import write_json

    rng = random.Random(seed)
    layout = Layout(root)
    for v in range(videos):
        n = 2 + v % 7
        colours = rng.sample(COLOURS, n)
        caps = [f"A {c} ball {rng.choice(ACTIONS)} near the {c} wall." for c in colours]
        if v == 5:
            caps[1] = caps[3]  # repeated caption: questions about it would be ambiguous
        clips, t = [], 0
        for k, cap in enumerate(caps):
            clips.append(Clip(k, t / 30, (t + 30) / 30, t, t + 30, cap))
            t += 40
        vid = f"syn{v:03d}"
        ann = NormalAnnotation(vid, vid, "data/x.parquet", v, f"{vid}.json", "test" if v % 3 == 0 else "train",
                               f"normal/videos/{vid}.mp4", 30.0, "30", t, t / 30, 64, 48, t / 30, "t", "c", clips)
        write_json(layout.normal_annotation(vid), ann.to_dict())
        perm = draw_permutations(n, 1, 42, vid)[0]
        write_json(layout.shuffled_annotation(vid), shuffled_annotation(ann, perm, 0, 42, layout).to_dict())
    return root


@pytest.fixture(scope="module", params=["processed", "synthetic"])
def generated(request, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "out"
    if request.param == "processed":
        root = copy_root(request.getfixturevalue("processed"), out)
    else:
        root = synthetic_root(out)
    run_all(root, mirrored=True, hard_negatives=("reversed", "adjacent_swap"))
    return root


# ---------------------------------------------------------------- tests

def test_merged_captions_in_annotations_and_views(generated):
    for which, sub, order_of in (("normal", "normal/annotations", real_order),
                                 ("shuffled", "shuffled/shuffled_annotations", shuffled_order)):
        view = rows(generated, f"captions/{which}.jsonl")
        assert view and len(view) == len(list((generated / sub).glob("*.json")))
        for r in view:
            ann = load(generated, f"{sub}/{r['id']}.json")
            by_index = {c.get("source_index", c["index"]): c["caption"] for c in ann["clips"]}
            expected = " ".join(by_index[i] for i in order_of(ann))
            assert ann["merged_caption"] == expected == r["merged_caption"]
            assert r["method"] == "join" and r["order"] == order_of(ann)


def test_sft_answers_recomputed_and_train_only(generated):
    sft = rows(generated, "sft/sft_explicit.jsonl")
    assert sft
    per_video = collections.Counter(r["id"] for r in sft)
    anns = {p.stem: json.loads(p.read_text()) for p in (generated / "normal/annotations").glob("*.json")}
    train = {v for v, a in anns.items() if a["split"] == "train"}
    assert set(per_video) == train, "every train video has questions, no test video has any"
    assert all(c == 3 for c in per_video.values())
    kinds = set()
    for r in sft:
        ann = anns[r["id"]]
        caps = [c["caption"] for c in ann["clips"]]
        expected = oracle(r["kind"], r["events"], real_order(ann))
        assert r["answer_clips"] == expected, r["qid"]
        assert text_states(r["answer"], expected, caps), (r["answer"], expected)
        assert r["clips"] == sorted(set(r["events"]) | set(expected))
        assert r["video"] == ann["video"]
        assert not Path(r["video"]).is_absolute()
        for e in r["events"]:
            assert mentions(r["question"], caps[e])
        kinds.add(r["kind"])
        assert len({(q["kind"], frozenset(q["events"])) for q in sft if q["id"] == r["id"]}) == per_video[r["id"]]
    for vid, count in per_video.items():  # kinds spread: no kind twice before every kind once
        assert len({q["kind"] for q in sft if q["id"] == vid}) == count


def test_pref_pairs_recomputed_from_permutation(generated):
    pref = rows(generated, "pref/pref_explicit.jsonl")
    sft = {r["qid"]: r for r in rows(generated, "sft/sft_explicit.jsonl")}
    rejects = rows(generated, "rejects/generate_pref_explicit.jsonl")
    assert pref
    negs = collections.Counter(r["negative"] for r in pref)
    assert set(negs) == {"shuffled_order", "mirrored", "reversed_order", "adjacent_swap"}, negs
    for r in pref:
        ann = load(generated, f"normal/annotations/{r['id']}.json")
        assert ann["split"] == "train"
        caps = [c["caption"] for c in ann["clips"]]
        real = real_order(ann)
        q = sft[r["qid"]]
        assert r["question"] == q["question"] and r["events"] == q["events"]
        if r["negative"] in ("shuffled_order", "mirrored"):
            sh = load(generated, f"shuffled/shuffled_annotations/{r['shuffled_id']}.json")
            shuf = shuffled_order(sh)
            good, bad = (real, shuf) if r["negative"] == "shuffled_order" else (shuf, real)
            assert r["video"] == (ann["video"] if r["negative"] == "shuffled_order" else sh["video"])
            assert r["negative_order"] == bad
        elif r["negative"] == "reversed_order":
            good, bad = real, real[::-1]
            assert r["negative_order"] == bad
        else:
            good, bad = real, r["negative_order"]
            diff = [i for i in range(len(real)) if bad[i] != real[i]]
            assert len(diff) == 2 and diff[1] == diff[0] + 1 and sorted(bad) == real
        exp_good, exp_bad = oracle(r["kind"], r["events"], good), oracle(r["kind"], r["events"], bad)
        assert r["chosen_clips"] == exp_good and r["rejected_clips"] == exp_bad, r["pid"]
        assert exp_good != exp_bad and r["chosen"] != r["rejected"]
        assert text_states(r["chosen"], exp_good, caps) and text_states(r["rejected"], exp_bad, caps), r["pid"]
        if r["negative"] == "shuffled_order":
            assert r["chosen"] == q["answer"]
    # every SFT question x shuffled video either gave a pair or was dropped because both orders agree
    dropped = {x["id"] for x in rejects if x["reason"] == "rejected equals chosen"}
    for qid, q in sft.items():
        ann = load(generated, f"normal/annotations/{q['id']}.json")
        sh = load(generated, f"shuffled/shuffled_annotations/{q['id']}.json")
        same = oracle(q["kind"], q["events"], real_order(ann)) == oracle(q["kind"], q["events"], shuffled_order(sh))
        pid = f"{qid}/shuffled_order"
        assert (pid in dropped) == same and any(p["pid"] == pid for p in pref) == (not same)


def test_benchmarks_keys_recomputed_test_only_and_balanced(generated):
    normal = rows(generated, "benchmark/normal.jsonl")
    shuffled = rows(generated, "benchmark/shuffled.jsonl")
    assert normal and len(normal) == len(shuffled)
    anns = {p.stem: json.loads(p.read_text()) for p in (generated / "normal/annotations").glob("*.json")}
    test_ids = {v for v, a in anns.items() if a["split"] == "test" and len(a["clips"]) >= 3}
    assert {r["id"] for r in normal} == test_ids
    too_few = {v for v, a in anns.items() if a["split"] == "test" and len(a["clips"]) < 3}
    rejected = {(r["id"], r["reason"]) for r in rows(generated, "rejects/generate_normal_benchmark.jsonl")}
    assert {(v, "too few clips for 4 options") for v in too_few} <= rejected
    changed = 0
    for n, s in zip(normal, shuffled):
        assert n["qid"] == s["qid"] and n["question"] == s["question"] and n["options"] == s["options"]
        ann = anns[n["id"]]
        assert ann["split"] == "test"
        sh = load(generated, f"shuffled/shuffled_annotations/{n['id']}.json")
        caps = [c["caption"] for c in ann["clips"]]
        assert len(n["options"]) == 4 and len(set(n["options"])) == 4
        for opts in n["option_clips"]:  # no option names the event the question is about
            if n["kind"] in ("after", "before"):
                assert opts[0] not in n["events"]
            if n["kind"] in ("order_three", "earliest_of", "latest_of"):
                assert set(opts) <= set(n["events"])
        key_n = oracle(n["kind"], n["events"], real_order(ann))
        key_s = oracle(n["kind"], n["events"], shuffled_order(sh))
        assert n["option_clips"][n["answer_index"]] == key_n and "ABCD"[n["answer_index"]] == n["answer"]
        assert s["option_clips"][s["answer_index"]] == key_s and "ABCD"[s["answer_index"]] == s["answer"]
        assert s["key_changed"] == (s["answer"] != n["answer"]) and s["normal_answer"] == n["answer"]
        assert s["video"] == sh["video"] and n["video"] == ann["video"]
        changed += s["key_changed"]
        # the option text is what option_clips say
        for text, opts in zip(n["options"], n["option_clips"]):
            if n["kind"] == "order_three":
                labels = [int(x) for x in re.findall(r"\((\d)\)", text)]
                assert [n["events"][lab - 1] for lab in labels] == opts
            else:
                assert norm(text) == norm(caps[opts[0]])
        assert all(f"{L}. " in n["prompt"] for L in "ABCD")
    assert changed > 0
    for bench in (normal, shuffled):
        counts = collections.Counter(r["answer"] for r in bench)
        assert max(counts[L] for L in "ABCD") - min(counts[L] for L in "ABCD") <= 2, counts


def test_deterministic_on_rerun(generated, tmp_path):
    other = copy_root(generated, tmp_path / "w2")
    run_all(other, mirrored=True, hard_negatives=("reversed", "adjacent_swap"))
    for rel in STAGES_OUT:
        assert (other / rel).read_bytes() == (generated / rel).read_bytes(), rel
    for p in (generated / "normal/annotations").glob("*.json"):
        assert (other / "normal/annotations" / p.name).read_bytes() == p.read_bytes()
    # and a different seed gives different questions
    run_stage(generate_sft_explicit, other, seed=7)
    assert (other / "sft/sft_explicit.jsonl").read_bytes() != (generated / "sft/sft_explicit.jsonl").read_bytes()


def test_stats_and_rejects_written(generated):
    for stage in ("merge_normal_captions", "merge_shuffled_captions", "generate_sft_explicit", "generate_pref_explicit",
                  "generate_normal_benchmark", "generate_shuffled_benchmark"):
        stats = load(generated, f"stats/{stage}.json")
        assert stats["stage"] == stage and stats["items_in"] >= stats["items_out"] > 0
        assert (generated / "rejects" / f"{stage}.jsonl").is_file()


# ---------------------------------------------------------------- a new generation stage is one class

@dataclass(frozen=True, kw_only=True)
class ClipCountConfig(StageConfig):
    min_clips: int = option(2, "fewest clips a video may have")


class ClipCounts(Generation):
    """What ARCHITECTURE.md shows: a stage = name, Config, split, output, make."""

    name = "clip_counts"
    Config = ClipCountConfig
    split, other_split = "train", "test-split videos skipped"
    summary = "{rows} counts in {out}"

    def output_file(self) -> Path:
        return self.layout.root / "counts.jsonl"

    def make(self, vid: str) -> list[Draft]:
        ann = self.normal(vid)
        if len(ann.clips) < self.cfg.min_clips:
            raise ItemError("too few clips", f"{len(ann.clips)} clip(s)")
        return [Draft({"id": vid, "clips": len(ann.clips)})]


def test_a_new_stage_is_one_class(generated, tmp_path):
    root = copy_root(generated, tmp_path / "new")
    anns = {p.stem: json.loads(p.read_text()) for p in sorted((root / "normal/annotations").glob("*.json"))}
    short = dict(next(a for a in anns.values() if a["split"] == "train"), id="aaa_short")
    short["clips"] = short["clips"][:1]
    (root / "normal/annotations/aaa_short.json").write_text(json.dumps(short))
    assert ClipCounts.main(["--root_dir", str(root), "--min_clips", "2", "--limit", "4"]) == 0
    first = sorted(anns)[:3]  # after aaa_short
    assert rows(root, "counts.jsonl") == [{"id": v, "clips": len(anns[v]["clips"])} for v in first
                                          if anns[v]["split"] == "train"]
    stats = load(root, "stats/clip_counts.json")
    assert stats["items_in"] == 4 and stats["options"]["min_clips"] == 2 and stats["options"]["limit"] == 4
    assert stats["counts"]["test-split videos skipped"] == sum(anns[v]["split"] != "train" for v in first) > 0
    assert [(r["id"], r["reason"]) for r in rows(root, "rejects/clip_counts.jsonl")] == [("aaa_short", "too few clips")]


# ---------------------------------------------------------------- a new question kind

def second_kind():
    """A kind added by a test: what happens second (asked with a free-text answer and as an MCQ)."""
    from timewarp.text.temporal import Kind

    return Kind("second", 0, lambda clip, n: True, False, lambda events, order, pos: (order[1],),
                ("What happens second in the video?",), ("Second, {c}.",), None,
                ("first", "last"), ("first", "last"), False, False, "video", 4)


def test_a_new_question_kind_is_one_record_and_changes_no_output(tmp_path, monkeypatch):
    import random

    from timewarp.text import temporal

    root = synthetic_root(tmp_path / "before", videos=20)
    run_all(root, mirrored=True, hard_negatives=("reversed", "adjacent_swap"))
    monkeypatch.setitem(temporal.KINDS, "second", second_kind())
    again = synthetic_root(tmp_path / "after", videos=20)
    run_all(again, mirrored=True, hard_negatives=("reversed", "adjacent_swap"))
    for rel in STAGES_OUT:
        assert (again / rel).read_bytes() == (root / rel).read_bytes(), rel

    # ... and that one record is all a kind needs: asked, answered, worded and given options
    caps = [f"A {c} ball {a}." for c, a in zip(COLOURS, ACTIONS)]
    perm = [3, 0, 6, 1, 7, 2, 5, 4]
    qs = [q for s in range(20) for q in temporal.pick_questions(caps, 8, random.Random(s),
                                                                kinds=temporal.SFT_KINDS + ("second",))]
    q = next(q for q in qs if q.kind == "second")
    assert temporal.answer("second", q.events, range(8)) == (1,) and temporal.answer("second", (), perm) == (0,)
    assert temporal.question_text("second", (), caps, q.phrasing) == "What happens second in the video?"
    assert temporal.answer_text("second", (), (1,), caps, 0) == f"Second, a {COLOURS[1]} ball {ACTIONS[1]}."
    mcqs = [m for s in range(20) for m in temporal.pick_mcqs(caps, perm, 7, random.Random(s),
                                                             kinds=temporal.MCQ_KINDS + ("second",))]
    m = next(m for m in mcqs if m.question.kind == "second")
    assert m.real_answer == (1,) and m.shuffled_answer == (0,) and len(set(m.options)) == 4
    assert temporal.flip_words("second", "answer") == ("first", "last")


def test_a_kind_missing_a_rule_does_not_load():
    from timewarp.text import temporal
    from timewarp.text.temporal import Kind

    good = second_kind()
    fields = [getattr(good, f) for f in good.__dataclass_fields__]
    with pytest.raises(TypeError):
        Kind(*fields[:-1])                                             # every field is required: no silent default
    for change, why in [(dict(flip_question=()), "flip_question"),           # no guard against a flipped rewording
                        (dict(flip_answer=()), "flip_answer"),               # answers without one
                        (dict(options="one event"), "options"),              # an options rule that does not exist
                        (dict(mcq_min_clips=None), "mcq_min_clips"),
                        (dict(questions=("What happens after {x}?",)), "question fields"),  # size 0 names no event
                        (dict(question_names_events=True), "question_names_events")]:
        with pytest.raises(ValueError, match=why):
            dataclasses.replace(good, **change)
    # an unknown kind, or one without the rule asked for, is an error, never a default
    with pytest.raises(ValueError, match="unknown question kind"):
        temporal.flip_words("second", "question")
    with pytest.raises(ValueError, match="unknown question kind"):
        temporal.answer("second", (), [0, 1])
    import random
    caps = [f"A {c} ball." for c in COLOURS]
    with pytest.raises(ValueError, match="which_first.*MCQ"):
        temporal.pick_mcqs(caps, list(range(9))[::-1], 3, random.Random(1), kinds=("which_first",))
    with pytest.raises(ValueError, match="earliest_of.*free-text"):
        temporal.pick_questions(caps, 3, random.Random(1), kinds=("earliest_of",))
