"""predict.py against a real loopback OpenAI-compatible server (frames checked by the numbers drawn in
them) and with the tiny local model; evaluate.py scores both benchmarks."""
from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import numpy as np
import pytest

from fake_openai import Fault, FakeOpenAI
from generated_output import build, fresh_copy
from timewarp.media import frames as framelib
from timewarp.benchmark import evaluate, predict
from timewarp.core.layout import Layout
from timewarp.sample_data import frame_id, read_frame_ids
from timewarp.core.store import read_json, read_jsonl

N = 8


@pytest.fixture(scope="module")
def generated(processed, tmp_path_factory) -> Path:
    return build(processed, tmp_path_factory)


@pytest.fixture
def root(generated, tmp_path) -> Path:
    return fresh_copy(generated, tmp_path / "out")


def frame_counts(root: Path) -> dict:
    layout = Layout(root)
    return {a["video"]: int(a["frame_count"]) for d in (layout.normal_annotations_dir, layout.shuffled_annotations_dir)
            for a in (read_json(p) for p in sorted(d.glob("*.json")))}


class Oracle:
    """Answers each question with its key, after reading the frame numbers out of the images it got."""

    def __init__(self, records: list):
        self.records = records
        self.seen = {}  # qid -> frame numbers in the order received

    def __call__(self, req: dict) -> str:
        import cv2

        parts = req["messages"][0]["content"]
        images = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
        text = "".join(p["text"] for p in parts if p["type"] == "text")
        rec = next(r for r in self.records if r["prompt"] in text)
        assert all(u.startswith("data:image/jpeg;base64,") for u in images)
        self.seen[rec["qid"]] = [frame_id(cv2.imdecode(np.frombuffer(base64.b64decode(u.split(",", 1)[1]), np.uint8),
                                                       cv2.IMREAD_COLOR)) for u in images]
        assert text.endswith("Answer with the option's letter from the given choices directly.")
        return f"The answer is ({rec['answer']})."


def test_api_sends_the_frames_in_order_and_the_oracle_scores_full_marks(root, tmp_path):
    counts = frame_counts(root)
    layout = Layout(root)
    with FakeOpenAI() as server:
        for bench in (layout.benchmark_normal_file, layout.benchmark_shuffled_file):
            records = read_jsonl(bench)
            server.responder = oracle = Oracle(records)
            server.push(Fault.server_error(503))  # retried
            preds = tmp_path / f"{bench.stem}.jsonl"
            assert predict.main(["--benchmark", str(bench), "--output", str(preds), "--llm_base_url", server.base_url,
                                 "--llm_model", server.model, "--llm_concurrency", "2", "--log_level", "WARNING"]) == 0
            assert set(oracle.seen) == {r["qid"] for r in records}
            for r in records:  # 8 image parts, the uniformly sampled frames of this very video, in order
                drawn = read_frame_ids(root / r["video"])  # the source frame number drawn in each decoded frame
                assert len(drawn) == counts[r["video"]]
                want = [drawn[i] for i in framelib.sample_indices(counts[r["video"]], n=N)]
                assert oracle.seen[r["qid"]] == want and len(want) == N, r["qid"]
            summary = evaluate.run(bench, preds, quiet=True)
            assert summary["accuracy"] == 1.0 and summary["n"] == len(records)
            if bench == layout.benchmark_shuffled_file:  # the key of a shuffled video follows its shuffled frames
                assert summary["key_changed"]["n"] > 0 and summary["key_changed"]["accuracy"] == 1.0
        calls = server.chat_calls
        # a rerun is answered from the cache under <root>/cache: no new request
        assert predict.main(["--benchmark", str(layout.benchmark_normal_file), "--output", str(tmp_path / "again.jsonl"),
                             "--llm_base_url", server.base_url, "--llm_model", server.model]) == 0
        assert server.chat_calls == calls
        assert read_jsonl(tmp_path / "again.jsonl") == read_jsonl(tmp_path / "normal.jsonl")


def test_api_failures_become_error_rows_scored_wrong_and_exit_1(root, tmp_path, capsys):
    bench = Layout(root).benchmark_shuffled_file
    n = len(read_jsonl(bench))
    with FakeOpenAI() as server:
        server.push(*[Fault.http_status(400, "image too large")] * n)
        preds = tmp_path / "p.jsonl"
        assert predict.main(["--benchmark", str(bench), "--output", str(preds), "--llm_base_url", server.base_url,
                             "--llm_model", server.model, "--llm_concurrency", "1"]) == 1
    rows = read_jsonl(preds)
    assert len(rows) == n and all(r["prediction"] == "" and "client error 400" in r["error"] for r in rows)
    assert f"{n} failed" in capsys.readouterr().out
    assert evaluate.run(bench, preds, quiet=True)["accuracy"] == 0.0
    # no model at all: one line, status 2
    assert predict.main(["--benchmark", str(bench), "--output", str(preds)]) == 2
    assert re.search(r"give --model .* or --llm_base_url", capsys.readouterr().err)


def test_tiny_local_model_predicts_both_benchmarks(root, tmp_path):
    if not os.environ.get("CI"):  # .ci/run installs requirements-train.txt: there a missing torch fails
        pytest.importorskip("torch")
    layout = Layout(root)
    for bench in (layout.benchmark_normal_file, layout.benchmark_shuffled_file):
        preds = tmp_path / f"{bench.stem}.jsonl"
        assert predict.main(["--benchmark", str(bench), "--output", str(preds), "--model", "tiny", "--limit", "2",
                             "--frames", "4", "--max_new_tokens", "3", "--log_level", "WARNING"]) == 0
        rows = read_jsonl(preds)
        assert [r["qid"] for r in rows] == [r["qid"] for r in read_jsonl(bench)][:2]
        assert all(isinstance(r["prediction"], str) and "error" not in r for r in rows)
        s = evaluate.run(bench, preds, quiet=True)
        assert s["n"] == len(read_jsonl(bench)) and s["accuracy"] <= 2 / s["n"]
