"""The benchmark scorer: reading free-form outputs (hand-checked), and the accuracy, per-kind,
key-changed and story-order numbers on the real benchmarks."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from generated_output import build
from timewarp import export
from timewarp.benchmark import evaluate
from timewarp.benchmark.scoring import extract_choice
from timewarp.core.layout import Layout
from timewarp.core.store import read_jsonl

OPTS = ["A red square slides from left to right", "A blue circle bounces", "A green bar sweeps across", "A cross grows"]
ORDER_OPTS = ["(2), then (3), then (1)", "(3), then (1), then (2)", "(3), then (2), then (1)", "(1), then (2), then (3)"]

# (model output, options, the option a careful human reads from it: 0-3, or None = no answer)
HAND_CHECKED = [
    ("B", OPTS, 1),
    ("(c)", OPTS, 2),
    ("D.", OPTS, 3),
    ("The answer is (B) because the circle bounces after the square.", OPTS, 1),
    ("I think c", OPTS, 2),
    ("Option 2", OPTS, 1),
    ("3", OPTS, 2),
    ("Answer: D", OPTS, 3),
    ("C. A green bar sweeps across", OPTS, 2),
    ("**A**", OPTS, 0),
    ("It is A.", OPTS, 0),
    ("a blue circle bounces", OPTS, 1),                       # the option text verbatim (case ignored)
    ("The video shows: A cross grows.", OPTS, 3),              # the option text inside a sentence
    ("A red square slides from left to right", OPTS, 0),       # leading "A" is the article, the text decides
    ("I think it is A but maybe B", OPTS, None),               # two answers
    ("(A) and (B)", OPTS, None),
    ("The answer is a bit unclear", OPTS, None),               # article, not option A
    ("asdf qwerty zxcv", OPTS, None),                          # gibberish
    ("", OPTS, None),
    (None, OPTS, None),
    ("(3), then (1), then (2)", ORDER_OPTS, 1),                # order-of-three option text, not "option 3"
    ("I would say (2), then (3), then (1).", ORDER_OPTS, 0),
    ("B", ORDER_OPTS, 1),
    ("(2) happens first", ORDER_OPTS, None),                   # "(2)" is an event there, not option 2
    ("2", ORDER_OPTS, None),                                   # a bare number names an event there too
    ("(2)", ORDER_OPTS, None),
    ("Answer: 3", ORDER_OPTS, None),
    ("Answer: 3", OPTS, 2),                                    # ...but is option 3 where options cite no events
]


@pytest.mark.parametrize("text,options,expected", HAND_CHECKED)
def test_extract_choice_hand_checked(text, options, expected):
    assert extract_choice(text, options) == expected


@pytest.fixture(scope="module")
def generated(processed, tmp_path_factory) -> Path:
    return build(processed, tmp_path_factory)


def write_preds(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_scores_on_the_shuffled_benchmark(generated, tmp_path, capsys):
    bench_file = Layout(generated).benchmark_shuffled_file
    bench = read_jsonl(bench_file)
    changed = [b for b in bench if b["key_changed"]]
    assert changed and len(changed) < len(bench), "the fixture should hold both changed and unchanged keys"

    perfect = evaluate.run(bench_file, write_preds(tmp_path / "p.jsonl", [{"qid": b["qid"], "prediction": b["answer"]} for b in bench]))
    assert perfect["accuracy"] == 1.0 and perfect["key_changed"]["accuracy"] == 1.0
    assert perfect["key_changed"]["story_order_rate"] == 0.0

    # a model that always follows the natural order scores exactly the story-order baseline
    story = evaluate.run(bench_file, write_preds(tmp_path / "s.jsonl", [
        {"qid": b["qid"], "response": f"The answer is ({b['normal_answer']}) because that is what usually happens."}
        for b in bench]))
    assert story["accuracy"] == pytest.approx(story["story_order_baseline"])
    assert story["accuracy"] == pytest.approx(1 - len(changed) / len(bench))
    assert story["key_changed"]["accuracy"] == 0.0 and story["key_changed"]["story_order_rate"] == 1.0
    assert story["key_unchanged"]["accuracy"] == 1.0

    # messy outputs, hand-scored: right by option text, right by "Option k", gibberish, and one missing
    rows = []
    expected_correct = 0
    for i, b in enumerate(bench[:-1]):
        if i % 3 == 0:
            rows.append({"qid": b["qid"], "prediction": b["options"][b["answer_index"]]})
            expected_correct += 1
        elif i % 3 == 1:
            rows.append({"qid": b["qid"], "prediction": f"Option {b['answer_index'] + 1} is correct" if "(1)" not in b["options"][0]
                         else f"I think {b['answer'].lower()}"})
            expected_correct += 1
        else:
            rows.append({"qid": b["qid"], "prediction": "hmm, hard to say"})
    capsys.readouterr()
    summary = evaluate.run(bench_file, write_preds(tmp_path / "m.jsonl", rows), json_out=tmp_path / "sum.json")
    assert summary["accuracy"] == pytest.approx(expected_correct / len(bench))
    assert summary["missing_predictions"] == 1
    assert summary["answered"] == expected_correct
    assert sum(k["n"] for k in summary["by_kind"].values()) == len(bench)
    assert json.loads((tmp_path / "sum.json").read_text())["accuracy"] == summary["accuracy"]
    out = capsys.readouterr().out
    assert "chance level: 25.0%" in out and "story order" in out and "key changed" in out


def test_normal_benchmark_and_its_mvbench_export_score_alike(generated, tmp_path):
    layout = Layout(generated)
    bench = read_jsonl(layout.benchmark_normal_file)
    preds = write_preds(tmp_path / "p.jsonl", [{"qid": b["qid"], "prediction": "A"} for b in bench])
    native = evaluate.run(layout.benchmark_normal_file, preds, quiet=True)
    assert native["accuracy"] == pytest.approx(sum(b["answer"] == "A" for b in bench) / len(bench))
    assert native["story_order_baseline"] == 1.0 and "key_changed" not in native
    import shutil

    out = tmp_path / "out"
    shutil.copytree(generated, out)
    export.run(export.Config(layout=Layout(out), format="mvbench"))
    exported = evaluate.run(Layout(out).export_dir("mvbench") / "normal.json", preds, quiet=True)
    assert exported["accuracy"] == native["accuracy"] and exported["by_kind"] == native["by_kind"]


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    assert evaluate.main(["--benchmark", str(tmp_path / "none.jsonl"), "--predictions", str(tmp_path / "p.jsonl")]) == 2
    bench = tmp_path / "b.jsonl"
    bench.write_text('{"qid": "x/mcq/0", "options": ["a", "b", "c", "d"], "answer": "B"}\n')
    (tmp_path / "p.jsonl").write_text("not json\n")
    assert evaluate.main(["--benchmark", str(bench), "--predictions", str(tmp_path / "p.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("evaluate.py: error:") for line in err)


def test_shared_readers_live_in_library_modules(tmp_path):
    """A stage module is an entry point: no module imports one (predict.py took load_records from evaluate.py,
    and the six generation stages' annotation loaders sat in generation.py beside the stage base class)."""
    import ast

    from timewarp.text import annotations, generation
    from timewarp.benchmark import predict, scoring
    from timewarp.core.errors import UsageError

    root = Path(__file__).resolve().parents[1] / "timewarp"
    importers = [p.name for p in root.rglob("*.py") for node in ast.walk(ast.parse(p.read_text()))
                 if isinstance(node, ast.ImportFrom) and node.module == "timewarp.benchmark.evaluate"]
    assert importers == []
    assert predict.load_records is scoring.load_records is evaluate.load_records
    for name in ("load_normal", "load_shuffled", "require_normal_ids", "shuffled_ids_by_video"):
        fn = getattr(annotations, name)
        assert fn.__module__ == "timewarp.text.annotations" and getattr(generation, name, fn) is fn
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UsageError, match="empty.jsonl holds no questions"):
        scoring.load_records(tmp_path / "empty.jsonl")
