"""Model rewording may change the words, never the meaning: every bad rewrite below is made by a fake
OpenAI-compatible server (tests/fake_openai.py) and must come back as the template text with a
"model reply not used (...)" failure; good rewrites (and videos with identical captions) still pass."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from fake_openai import fake_openai  # noqa: E402,F401 - fake_openai is a fixture

from stages import run_stage  # noqa: E402
from timewarp.benchmark import generate_normal_benchmark  # noqa: E402
from timewarp.text.llm import ChatClient  # noqa: E402
from timewarp.pref_data import generate_pref_explicit, generate_sft_explicit  # noqa: E402
from timewarp.text.temporal import KINDS, answer, answer_text, flip_words, question_text  # noqa: E402
from timewarp.text.textgen import OpenAIBackend, Rewrite, TemplateBackend  # noqa: E402

NONE_ANSWERS = {name: k.none_answer for name, k in KINDS.items() if k.none_answer}

CAPS = [
    "A chef chops fresh onions on a wooden board.",     # 0
    "The chef stirs tomato sauce in a pot.",            # 1
    "A waiter carries plates to the dining room.",      # 2
    "Guests applaud while the waiter smiles.",          # 3
    "The chef tastes the soup with a spoon.",           # 4
]


def sft_item(kind: str, events: tuple, phrasing: int = 0, captions=CAPS, order=None) -> Rewrite:
    """The Rewrite generate_sft_explicit builds for one question (real order unless ``order``)."""
    ans = answer(kind, events, order if order is not None else range(len(captions)))
    rec = {"qid": f"v/sft/{kind}/{phrasing}", "kind": kind, "events": list(events), "answer_clips": list(ans),
           "question": question_text(kind, events, captions, phrasing),
           "answer": answer_text(kind, events, ans, captions, phrasing)}
    return generate_sft_explicit.rewrite_qa(rec, list(captions))


@pytest.fixture
def backend(fake_openai, tmp_path):
    client = ChatClient(fake_openai.base_url, fake_openai.model, tmp_path / "cache", max_retries=1, backoff=0.01)
    return OpenAIBackend(client)


def serve(fake, edit):
    """The fake model answers every field with ``edit(name, text)`` (a caption request: name "caption",
    the events joined)."""
    def responder(req):
        user = json.loads(req["messages"][-1]["content"])
        if "events" in user:
            return json.dumps({"caption": edit("caption", " ".join(user["events"]))})
        return json.dumps({k: edit(k, v) for k, v in user.items()})
    fake.responder = responder


def sent_fields(fake) -> list[dict]:
    return [json.loads(r.body["messages"][-1]["content"]) for r in fake.chat_requests]


def assert_rejected(rw, item: Rewrite, why: str):
    assert rw.wording == "template" and rw.fields == item.fields
    assert rw.failure and rw.failure[0] == "model reply not used (malformed reply)", rw.failure
    assert why in rw.failure[1], rw.failure


def sub(pattern: str, repl: str):
    return lambda name, text: re.sub(pattern, repl, text)


# ---------------------------------------------------------------- bad rewrites, one per hole

BAD = [
    # first / last: the direction word flips, no event changes
    ("first answer -> last", sft_item("first", (), 0), sub(r"^First", "Last"), "direction word added (last)"),
    ("first answer -> ends", sft_item("first", (), 1), sub(r"begins", "ends"), "direction word added (ends)"),
    ("last answer -> beginning", sft_item("last", (), 2), sub(r"very end", "very beginning"),
     "direction word added (beginning)"),
    # right after X / right before X
    ("after question -> before", sft_item("after", (1,), 0), sub(r"right after", "just before"),
     "direction word added (before)"),
    ("after answer -> just before", sft_item("after", (1,), 0), sub(r"Right after that", "Just before"),
     "direction word added (before)"),
    ("before answer -> after", sft_item("before", (3,), 0), sub(r"Right before that", "Right after that"),
     "direction word added (after)"),
    ("before question -> follows", sft_item("before", (3,), 1), sub(r"precedes", "follows"),
     "direction word added (follows)"),
    # an answer naming another event of the video (distinctive words against ALL captions)
    ("after answer names another event", sft_item("after", (1,), 0),
     lambda n, t: t if n == "question" else t.rstrip(".") + ", then guests applaud.", "mentions another event"),
    ("answer swapped for another event", sft_item("last", (), 0),
     lambda n, t: "Last, the chef chops fresh onions on a wooden board.", "mentions another event (chops)"),
    # which_first: winner and loser swapped
    ("which_first answer swapped", sft_item("which_first", (3, 1), 0),
     lambda n, t: t if n == "question" else '"The waiter smiles as guests applaud" comes first; '
                                            '"The chef stirs tomato sauce in a pot" happens later.',
     "event 2 outside its place"),
    ("which_first answer loses the loser", sft_item("which_first", (3, 1), 0),
     lambda n, t: t if n == "question" else '"The chef stirs tomato sauce in a pot" comes first.', "quotes changed"),
    ("which_first question -> last", sft_item("which_first", (3, 1), 0), sub(r"happens first", "happens last"),
     "direction word added (last)"),
    # order_three: labels moved off their own events
    ("order_three labels swapped", sft_item("order_three", (2, 0, 4), 0),
     lambda n, t: t.replace("(1)", "(X)").replace("(2)", "(1)").replace("(X)", "(2)") if n == "question" else t,
     "marker (1) out of place"),
    ("order_three events swapped", sft_item("order_three", (2, 0, 4), 0),
     lambda n, t: "In what order do these events happen in the video? (1) A chef chops fresh onions on a wooden "
                  "board. (2) A waiter carries plates to the dining room. (3) The chef tastes the soup with a spoon."
     if n == "question" else t, "event 2 outside its place (chef)"),
    ("order_three question -> reverse", sft_item("order_three", (2, 0, 4), 0),
     sub(r"In what order", "In what reverse order"), "direction word added (reverse)"),
    ("order_three answer keeps order, flips words", sft_item("order_three", (2, 0, 4), 0),
     lambda n, t: t if n == "question" else t.replace("First", "Last").replace("finally", "before all that"),
     "direction word added"),
]


@pytest.mark.parametrize("name,item,edit,why", BAD, ids=[b[0] for b in BAD])
def test_bad_rewrite_keeps_template_and_is_recorded(name, item, edit, why, backend, fake_openai):
    serve(fake_openai, edit)
    [rw] = backend.reword([item])
    assert_rejected(rw, item, why)


def test_fields_with_nothing_to_keep_are_never_sent(backend, fake_openai):
    serve(fake_openai, lambda n, t: "Well, " + t)
    first = sft_item("first", (), 0)
    none_after = sft_item("after", (4,), 0)  # clip 4 is the last: "Nothing follows it"
    none_before = sft_item("before", (0,), 0)
    assert none_after.fields["answer"] == NONE_ANSWERS["after"] and none_before.fields["answer"] == NONE_ANSWERS["before"]
    bench = Rewrite("v/mcq/0", {"question": question_text("latest_of", (0, 1, 2, 3), CAPS, 0)},
                    keep={"question": []}, captions=CAPS, forbid={"question": flip_words("latest_of", "question")})
    out = backend.reword([first, none_after, none_before, bench])
    sent = sent_fields(fake_openai)
    assert all(NONE_ANSWERS["after"] not in json.dumps(s) and NONE_ANSWERS["before"] not in json.dumps(s) for s in sent)
    assert sorted(map(sorted, sent)) == [["answer"], ["question"], ["question"]]  # first: answer only; bench: nothing
    assert out[0].fields["question"] == first.fields["question"]          # not sent, kept
    assert out[1].fields["answer"] == NONE_ANSWERS["after"] and out[1].fields["question"].startswith("Well, ")
    assert out[2].fields["answer"] == NONE_ANSWERS["before"] and out[2].wording == "llm" and not out[2].failure
    assert out[3].fields == bench.fields and out[3].wording == "template" and out[3].failure is None


GOOD = [
    ("first", sft_item("first", (), 0), sub(r"^First, a chef", "At first, we see a chef who")),
    ("after", sft_item("after", (1,), 0),
     lambda n, t: t.replace("What happens", "What do we see") if n == "question" else "Next, a waiter carries plates "
                                                                                     "over to the dining room."),
    ("before", sft_item("before", (3,), 2), sub(r"The preceding event is this: a", "Just before, a")),
    ("which_first", sft_item("which_first", (3, 1), 0), lambda n, t: "Well, " + t),
    ("order_three", sft_item("order_three", (2, 0, 4), 0), lambda n, t: "Sure: " + t),
]


@pytest.mark.parametrize("name,item,edit", GOOD, ids=[g[0] for g in GOOD])
def test_good_rewrite_is_accepted(name, item, edit, backend, fake_openai):
    serve(fake_openai, edit)
    [rw] = backend.reword([item])
    assert rw.failure is None and rw.wording == "llm", rw.failure
    assert rw.fields != item.fields


def test_caption_that_says_first_does_not_block_its_own_rewording(backend, fake_openai):
    caps = ["The host first waves at the camera.", "A dog runs across the yard.", "The host laughs loudly."]
    item = sft_item("last", (), 0, captions=caps)  # "Last, the host laughs loudly."
    after = sft_item("after", (0,), 0, captions=caps)  # question holds "first" (the caption's own word)
    serve(fake_openai, lambda n, t: "Well, " + t)
    assert all(rw.failure is None and rw.wording == "llm" for rw in backend.reword([item, after]))


def test_duplicate_captions_are_accepted_and_each_copy_is_required(backend, fake_openai, tmp_path):
    caps = ["A man opens the door.", "A dog barks at the mailman.", "A man opens the door.", "The dog sleeps."]
    merged = Rewrite("dup", {"caption": " ".join(caps)}, keep={"caption": caps}, caption=True, captions=caps,
                     events=tuple(caps))
    after = sft_item("after", (1,), 0, captions=caps)  # answer: the second "A man opens the door."
    order = sft_item("order_three", (3, 0, 1), 0, captions=caps)
    serve(fake_openai, lambda n, t: ("First, " + " Then, ".join(caps)) if n == "caption" else "Well, " + t)
    out = backend.reword([merged, after, order])
    assert all(rw.failure is None and rw.wording == "llm" for rw in out), [rw.failure for rw in out]

    shutil.rmtree(tmp_path / "cache")  # same request as above: ask the server again
    fake_openai.responder = lambda req: json.dumps({"caption": "First, " + " Then, ".join(caps[:2] + caps[3:])})  # 2nd copy lost
    [rw] = backend.reword([Rewrite("dup2", {"caption": " ".join(caps)}, keep={"caption": caps}, caption=True,
                                   captions=caps, events=tuple(caps))])
    assert_rejected(rw, Rewrite("dup2", {"caption": " ".join(caps)}), "caption: event 3 ")


def test_template_backend_output_unchanged(tmp_path):
    items = [sft_item(k, ev, ph) for k, ev in [("first", ()), ("after", (4,)), ("which_first", (3, 1)),
                                               ("order_three", (2, 0, 4))] for ph in range(3)]
    out = TemplateBackend().reword(items)
    assert [rw.fields for rw in out] == [it.fields for it in items] and {rw.wording for rw in out} == {"template"}


# ---------------------------------------------------------------- the stages, end to end

FLIP = {"first": "last", "last": "first", "after": "before", "before": "after", "begins": "ends", "ends": "begins",
        "beginning": "end", "end": "beginning", "follows": "precedes", "precedes": "follows", "following": "preceding",
        "preceding": "following", "next": "previous", "earlier": "later", "later": "earlier", "earliest": "latest",
        "latest": "earliest", "finally": "initially", "afterwards": "beforehand"}


def flip(_name, text):
    def one(m):
        w = m.group(0)
        f = FLIP.get(w.lower())
        return w if f is None else (f.capitalize() if w[0].isupper() else f)
    return re.sub(r"[A-Za-z]+", one, text)


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def root(processed, tmp_path) -> Path:
    return Path(shutil.copytree(processed, tmp_path / "out", ignore=shutil.ignore_patterns("*.mp4")))


def test_stages_keep_template_text_when_the_model_flips_directions(root, fake_openai):
    run_stage(generate_sft_explicit, root)
    run_stage(generate_pref_explicit, root, mirrored=True)
    run_stage(generate_normal_benchmark, root)
    template = {rel: rows(root / rel) for rel in ("sft/sft_explicit.jsonl", "pref/pref_explicit.jsonl",
                                                  "benchmark/normal.jsonl")}
    serve(fake_openai, flip)
    args = ["--root_dir", str(root), "--backend", "openai", "--llm_base_url", fake_openai.base_url, "--llm_model",
            fake_openai.model, "--llm_max_retries", "0"]
    assert generate_sft_explicit.main(args) == 0
    assert generate_pref_explicit.main(args + ["--mirrored"]) == 0
    assert generate_normal_benchmark.main(args) == 0
    checked = 0
    for rel, stage, key, names in (("sft/sft_explicit.jsonl", "generate_sft_explicit", "qid", ("question", "answer")),
                                   ("pref/pref_explicit.jsonl", "generate_pref_explicit", "pid", ("chosen", "rejected")),
                                   ("benchmark/normal.jsonl", "generate_normal_benchmark", "qid", ("question",))):
        rej = {r["id"]: r for r in rows(root / "rejects" / f"{stage}.jsonl")}
        got = rows(root / rel)
        assert len(got) == len(template[rel])
        for new, old in zip(got, template[rel]):
            assert new[key] == old[key]
            sent = [n for n in names if old[n] not in NONE_ANSWERS.values()
                    and not (n == "question" and old["kind"] in ("first", "last", "earliest_of", "latest_of"))]
            flipped = any(flip(n, old[n]) != old[n] for n in sent)
            if flipped:
                checked += 1
                assert all(new[n] == old[n] for n in names) and new["wording"] == "template", (new["question"], old["question"])
                assert rej[new[key]]["reason"] == "model reply not used (malformed reply)"
                assert "direction word added" in rej[new[key]]["detail"]
            else:
                assert new[key] not in rej and all(new[n] == old[n] for n in names)
                assert new["wording"] == ("llm" if sent else "template")
    assert checked >= 5
