"""generate_pref_implicit.py against a loopback OpenAI-compatible vision server, and combine_pref.py."""
from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fake_openai import Fault, fake_openai  # noqa: E402,F401 - fake_openai is a fixture
from test_frames import frame_id  # noqa: E402

from timewarp.media.corruptions import Corrupted  # noqa: E402
from timewarp.core.errors import UsageError  # noqa: E402
from timewarp.media.frames import decode_jpeg  # noqa: E402
from timewarp.core.layout import Layout  # noqa: E402
from timewarp.text.llm import ChatClient  # noqa: E402
from timewarp.core.parallel import Executor  # noqa: E402
from timewarp.pref_data import combine_pref  # noqa: E402
from timewarp.pref_data import generate_pref_implicit as gi  # noqa: E402
from timewarp.core.store import read_json, read_jsonl  # noqa: E402

TRAIN = ["film24", "ntsc30", "pal25"]


@pytest.fixture
def root(processed, tmp_path) -> Path:
    """A copy of the processed root with three train videos (splice needs a partner) and one test video."""
    out = tmp_path / "out"
    shutil.copytree(processed, out)
    for p in Layout(out).normal_annotations_dir.glob("*.json"):
        d = json.loads(p.read_text())
        d["split"] = "train" if p.stem in TRAIN else "test"
        p.write_text(json.dumps(d))
    return out


def images_of(body: dict) -> list[np.ndarray]:
    parts = body["messages"][-1]["content"]
    return [decode_jpeg(base64.b64decode(p["image_url"]["url"].split(",", 1)[1]))
            for p in parts if p["type"] == "image_url"]


def prompt_of(body: dict) -> str:
    return body["messages"][-1]["content"][-1]["text"]


def seeing_responder(body: dict) -> str:
    """A 'vision model' that reports the frame numbers it was shown, in order (and invents on request)."""
    seen = " ".join(str(frame_id(img)) for img in images_of(body))
    extra = "" if prompt_of(body) == gi.DESCRIBE_PROMPT else " and then a dragon appears and sings a song"
    return json.dumps({"description": f"the video shows frames {seen} in this order{extra}"})


def client_for(server, root: Path, **kw) -> ChatClient:
    opts = dict(api_key="sk-test", backoff=0.01, max_backoff=0.05, timeout=1.0, max_retries=4)
    opts.update(kw)
    return ChatClient(server.base_url, server.model, Layout(root).cache_dir, **opts)


def run(root, client, workers=2, **kw):
    opts = dict(corruptions_per_video=7, rejected_mode="both", min_distance=0.05)
    opts.update(kw)
    return gi.run(gi.Config(layout=Layout(root), **opts), client, Executor(workers=workers))


def combine(root, **options) -> dict:
    return combine_pref.run(combine_pref.Config(layout=Layout(root), **options))


def test_frames_really_sent_match_the_recorded_order(fake_openai, root):
    fake_openai.responder = seeing_responder
    stats = run(root, client_for(fake_openai, root))
    recs = read_jsonl(Layout(root).pref_implicit_file)
    assert {r["id"] for r in recs} == set(TRAIN)                   # train split only
    assert stats["counts"]["test split (held out)"] == 1
    names = {r["corruption"]["name"] for r in recs}
    assert {"shuffle", "reverse", "drop", "freeze", "splice", "blur", "hallucinate"} <= names

    sent = [(prompt_of(q.body), images_of(q.body)) for q in fake_openai.chat_requests]
    seen = [(p, [frame_id(i) for i in imgs]) for p, imgs in sent]
    for r in recs:
        assert r["prompt"] == gi.DESCRIBE_PROMPT
        assert (gi.DESCRIBE_PROMPT, r["frames"]) in seen                       # chosen: real frames, in order
        assert r["chosen"] == f"the video shows frames {' '.join(map(str, r['frames']))} in this order"
        name = r["corruption"]["name"]
        if name in ("blur", "noise"):
            continue  # pixels changed: checked below
        assert (r["rejected_prompt"], r["rejected_frames"]) in seen            # rejected: the recorded order
        assert r["rejected"].startswith(f"the video shows frames {' '.join(map(str, r['rejected_frames']))} ")
        if name == "reverse":
            assert r["rejected_frames"] == r["frames"][::-1]
        elif name == "splice":
            p = r["corruption"]["params"]
            assert p["other_id"] != r["id"] and p["other_id"] in TRAIN
            assert r["rejected_frames"][p["start"]:p["end"]] == p["other_frames"]
        elif name == "hallucinate":
            assert r["rejected_prompt"] in gi.HALLUCINATION_PROMPTS.values()
            assert r["rejected_frames"] == r["frames"] and "dragon" in r["rejected"]
        assert r["distance"] >= 0.05

    blur = next(r for r in recs if r["corruption"]["name"] == "blur")
    chosen_imgs = next(imgs for p, imgs in sent if p == gi.DESCRIBE_PROMPT and [frame_id(i) for i in imgs] == blur["frames"])
    blurred = [imgs for p, imgs in sent if p == gi.DESCRIBE_PROMPT and len(imgs) == len(chosen_imgs)
               and imgs[0].shape == chosen_imgs[0].shape
               and np.abs(imgs[0].astype(int) - chosen_imgs[0].astype(int)).mean() > 8]
    assert blurred                                                             # degraded frames were sent
    assert max(im.shape[1] for _, imgs in sent for im in imgs) <= 448          # --image_max_side
    assert stats["llm_usage"]["calls"] == fake_openai.chat_calls and stats["llm_usage"]["prompt_tokens"] > 0


def test_faults_are_retried_and_a_rerun_makes_no_calls(fake_openai, root):
    fake_openai.responder = seeing_responder
    fake_openai.push(Fault.rate_limited(0.01), Fault.server_error(500), Fault.hang(3),
                     Fault.malformed('{"description": "the video shows'), Fault.malformed('{"description": "too short"}'))
    kw = dict(corruptions=["reverse", "shuffle"], corruptions_per_video=2, rejected_mode="corrupt")
    stats = run(root, client_for(fake_openai, root), **kw)
    out = Layout(root).pref_implicit_file
    first = out.read_bytes()
    assert len(read_jsonl(out)) == 6 and stats["rejected"] == 0
    usage = stats["llm_usage"]
    assert usage["retries"] == 5 and usage["failures"] == 0
    assert fake_openai.chat_calls == 9 + 5                                     # 3 chosen + 6 rejected, + 5 faults

    calls = fake_openai.chat_calls
    again = run(root, client_for(fake_openai, root), **kw)
    assert fake_openai.chat_calls == calls                                     # all from the cache
    assert again["llm_usage"]["cache_hits"] == 9 and again["llm_usage"]["calls"] == 0
    assert out.read_bytes() == first                                           # byte-identical


def test_a_failing_request_is_a_reject_not_a_crash(fake_openai, root):
    fake_openai.responder = seeing_responder
    fake_openai.push(*[Fault.server_error(503)] * 3)
    stats = run(root, client_for(fake_openai, root, max_retries=2, concurrency=1), corruptions=["reverse"],
                corruptions_per_video=1, rejected_mode="corrupt", workers=1)
    # concurrency 1: the first request (film24's chosen) gets all three 503s and fails
    assert stats["rejects_by_reason"] == {"model reply failed (server error 503)": 1, "no chosen response": 1}
    assert {r["id"] for r in read_jsonl(Layout(root).pref_implicit_file)} == {"ntsc30", "pal25"}


def test_a_server_that_refuses_images_is_one_usage_error(fake_openai, root):
    fake_openai.push(*[Fault.http_status(400, "This model does not support image input")] * 6)
    with pytest.raises(UsageError, match="accept images"):
        run(root, client_for(fake_openai, root), corruptions=["reverse"], corruptions_per_video=1,
            rejected_mode="corrupt")
    assert fake_openai.chat_calls == 6                                          # client errors: no retries


def test_near_identical_responses_are_dropped_with_reason(fake_openai, root):
    fake_openai.responder = lambda body: json.dumps(
        {"description": "A red square slides across a green field, then a blue bar sweeps across the frame."})
    stats = run(root, client_for(fake_openai, root), corruptions=["reverse", "freeze"], corruptions_per_video=2,
                rejected_mode="corrupt")
    assert read_jsonl(Layout(root).pref_implicit_file) == []
    assert stats["rejects_by_reason"] == {"near-identical responses": 6}
    rej = read_jsonl(Layout(root).rejects_file(gi.STAGE))
    assert all(r["detail"] == "distance 0.0000 < 0.05" for r in rej)
    assert gi.text_distance("a b c d", "a b c d") == 0.0
    assert gi.text_distance("The cat sat.", "the cat, sat") == 0.0                # case and punctuation ignored
    assert gi.text_distance("a b c d", "a x c d") == 0.25


def test_no_vision_endpoint_is_one_line_and_exit_2(root, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    for argv in (["--root_dir", str(root)],
                 ["--root_dir", str(root), "--backend", "template", "--llm_base_url", "http://localhost:8000/v1"],
                 ["--root_dir", str(root), "--backend", "openai"]):
        assert gi.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "needs a vision model endpoint" in err and "--llm_base_url" in err
    assert not Layout(root).pref_implicit_file.exists()
    with pytest.raises(UsageError):
        gi.run(gi.Config(layout=Layout(root)), None)


def test_cli_against_the_fake_server(fake_openai, root, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    fake_openai.responder = seeing_responder
    # --llm_base_url alone means the openai backend (the only one this stage has)
    code = gi.main(["--root_dir", str(root), "--llm_base_url", fake_openai.base_url,
                    "--llm_model", fake_openai.model, "--corruptions", "reverse,drop", "--frames", "6",
                    "--workers", "1", "--min_distance", "0.05"])
    assert code == 0
    recs = read_jsonl(Layout(root).pref_implicit_file)
    assert len(recs) == 3 and all(len(r["frames"]) == 6 for r in recs)
    assert all(r["corruption"]["name"] in ("reverse", "drop") for r in recs)
    stats = read_json(Layout(root).stats_file(gi.STAGE))
    assert fake_openai.chat_calls == 6 and stats["options"]["llm_model"] == fake_openai.model
    assert stats["llm_usage"]["completion_tokens"] > 0          # token accounting (calls also counts the preflight)


def invert(frames, seed: int = 0) -> Corrupted:
    """A corruption added by a test: every frame's colours inverted."""
    return Corrupted("invert", {}, [255 - f for f in frames], [(0, i) for i in range(len(frames))],
                     pixels_changed=True)


def test_a_new_corruption_leaves_the_existing_outputs_byte_identical(fake_openai, root, monkeypatch):
    """Adding a corruption is one record in timewarp.media.corruptions.CORRUPTIONS: the default draw does not
    change, and drawing from a list that holds it changes only the videos that draw it."""
    import importlib

    from timewarp.media import corruptions

    more = corruptions.DEFAULT_CORRUPTIONS + ("invert",)
    seed = next(s for s in range(100) if 0 < sum("invert" in corruptions.choose(more, 2, s, f"{v}/implicit")
                                                  for v in TRAIN) < len(TRAIN))  # one or two videos draw it
    fake_openai.responder = seeing_responder
    out = Layout(root).pref_implicit_file
    kw = dict(corruptions_per_video=2, rejected_mode="both", seed=seed)
    run(root, client_for(fake_openai, root), **kw)
    default = out.read_bytes()

    monkeypatch.setitem(corruptions.CORRUPTIONS, "invert", corruptions.Corruption("invert", invert, "inverted (n)"))
    try:
        importlib.reload(gi)  # as after an edit of corruptions.py: the stage module is loaded again
        run(root, client_for(fake_openai, root), **kw)
        assert out.read_bytes() == default                                   # the default draw: unchanged
        run(root, client_for(fake_openai, root), corruptions=more, **kw)
        with_new = read_jsonl(out)
    finally:
        monkeypatch.undo()
        importlib.reload(gi)
    before = {r["pid"]: r for r in map(json.loads, default.decode().splitlines())}
    drew = {r["id"] for r in with_new if r["corruption"]["name"] == "invert"}
    assert drew and drew != set(TRAIN)
    for r in with_new:
        if r["corruption"]["name"] == "invert":
            assert r["rejected"].startswith("the video shows frames ")
        else:
            assert r == before[r["pid"]]                                     # every other pair as it was
    for pid, r in before.items():                                            # a pair lost only to the newcomer
        assert any(x["pid"] == pid for x in with_new) or r["id"] in drew


# ---------------------------------------------------------------------- combine_pref
def pair(video: str, prompt: str, i: int, key: str = "prompt", **extra) -> dict:
    return {"id": f"{video}-{i}", "video": video, key: prompt, "chosen": f"good {i}", "rejected": f"bad {i}", **extra}


@pytest.fixture
def pref_root(tmp_path) -> tuple[Path, Path]:
    root = tmp_path / "out"
    layout = Layout(root)
    layout.pref_dir.mkdir(parents=True)
    explicit = [pair(f"normal/videos/e{i}.mp4", "What happens first?", i, key="question", pid=f"e{i}/q0")
                for i in range(40)]
    explicit.append(dict(explicit[0], pid="e0/q0-dup"))                      # same (video, question)
    implicit = [pair(f"normal/videos/e{i}.mp4", gi.DESCRIBE_PROMPT, i) for i in range(20)]
    implicit.append(pair("normal/videos/e1.mp4", "  what HAPPENS   first? ", 99))  # duplicate of an explicit pair
    lines = [json.dumps(r) for r in explicit] + ["{not json", json.dumps({"video": "v", "prompt": "p"}), ""]
    (layout.pref_explicit_file).write_text("\n".join(lines) + "\n")
    (layout.pref_implicit_file).write_text("".join(json.dumps(r) + "\n" for r in implicit))
    ext = tmp_path / "llava_hound_dpo.jsonl"
    ext.write_text("".join(json.dumps(pair(f"hound/{i}.mp4", f"Describe video {i}.", i)) + "\n" for i in range(100)))
    return root, ext


def test_combine_ratios_dedup_and_composition(pref_root):
    root, ext = pref_root
    stats = combine(root, implicit_ratio=0.5, external=[f"{ext}:0.25"], seed=1)
    rows = read_jsonl(Layout(root).pref_combined_file)
    comp = stats["composition"]
    assert comp["explicit"]["read"] == 43 and comp["explicit"]["invalid"] == 2
    assert comp["explicit"]["duplicates_within"] == 1 and comp["explicit"]["taken"] == 40
    assert comp["implicit"]["duplicates_of_earlier"] == 1 and comp["implicit"]["available"] == 20
    assert comp["implicit"]["taken"] == 10 and comp["llava_hound_dpo"]["taken"] == 25
    assert len(rows) == 75 and sum(c["share"] for c in comp.values()) == pytest.approx(1.0, abs=1e-3)
    keys = [(r["video"], " ".join(r["prompt"].split()).casefold()) for r in rows]
    assert len(set(keys)) == len(keys)                                          # dedup by (video, prompt)
    assert {r["source"] for r in rows} == {"explicit", "implicit", "llava_hound_dpo"}
    assert all(r["prompt"] == "What happens first?" for r in rows if r["source"] == "explicit")  # "question" read
    assert [r["source"] for r in rows[:20]] != sorted(r["source"] for r in rows[:20])  # mixed, not concatenated
    assert stats["rejects_by_reason"] == {"no chosen or rejected": 1, "not JSON": 1}

    # several negatives per prompt (the implicit stage writes one per corruption) survive --dedup_by pair
    implicit = Layout(root).pref_implicit_file
    implicit.write_text(implicit.read_text() + json.dumps(dict(pair("normal/videos/e3.mp4", gi.DESCRIBE_PROMPT, 3),
                                                               rejected="another bad", id="e3-b")) + "\n")
    assert combine(root, seed=1)["composition"]["implicit"]["duplicates_within"] == 1
    assert combine(root, seed=1, dedup_by="pair")["composition"]["implicit"]["taken"] == 22  # + the one that was a (video, prompt) dup


def test_combine_is_deterministic_for_a_seed(pref_root):
    root, ext = pref_root
    out = Layout(root).pref_combined_file
    combine(root, external=[str(ext)], implicit_ratio=0.3, seed=5)
    a = out.read_bytes()
    combine(root, external=[str(ext)], implicit_ratio=0.3, seed=5)
    assert out.read_bytes() == a
    # independent of line order within a file
    lines = ext.read_text().splitlines()
    ext.write_text("\n".join(reversed(lines)) + "\n")
    combine(root, external=[str(ext)], implicit_ratio=0.3, seed=5)
    assert out.read_bytes() == a
    combine(root, external=[str(ext)], implicit_ratio=0.3, seed=6)
    assert out.read_bytes() != a


def test_combine_usage_errors(pref_root, tmp_path, capsys):
    root, ext = pref_root
    assert combine_pref.main(["--root_dir", str(root), "--external", str(tmp_path / "nope.jsonl")]) == 2
    assert "not found" in capsys.readouterr().err
    assert combine_pref.main(["--root_dir", str(root), "--implicit_ratio", "1.5"]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert combine_pref.main(["--root_dir", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "nothing to combine" in err[-1]


def test_a_description_in_plain_text_counts_json_is_checked():
    """A description needs no JSON: prose (even fenced) is the description; a JSON reply must be the object."""
    prose = "First a red square slides in, then a blue bar sweeps across, and at last the frame fades to black."
    assert gi.validate_description(prose) == prose
    assert gi.validate_description("```\n" + prose + "\n```") == prose
    assert gi.validate_description(json.dumps({"description": prose})) == prose
    for bad, why in [('{"description": "the video shows', "not valid JSON"), ('{"text": "%s"}' % prose, "missing key"),
                     ('["a", "b", "c", "d", "e", "f", "g", "h"]', "not an object"), ("", "empty"),
                     ("A red square slides in.", "fewer than")]:
        with pytest.raises(ValueError, match=why):
            gi.validate_description(bad)


def test_a_model_answering_in_prose_gives_pairs(fake_openai, root):
    def prose_responder(body):
        return json.loads(seeing_responder(body))["description"]  # the same text, without the JSON object
    fake_openai.responder = prose_responder
    stats = run(root, client_for(fake_openai, root), corruptions=["reverse"], corruptions_per_video=1,
                rejected_mode="corrupt")
    recs = read_jsonl(Layout(root).pref_implicit_file)
    assert len(recs) == 3 and stats["rejected"] == 0 and stats["llm_usage"]["retries"] == 0
    for r in recs:  # the chosen text reports the real frames in increasing order, the reversed ones decreasing
        assert r["chosen"].startswith("the video shows frames ") and r["chosen"] != r["rejected"]
