"""A model's rewording is used only when it says exactly what the template says (issue 17), and captions
equal up to case and punctuation are one event (issue 12).

* the replies the issue found accepted, each refused here (these tests fail on the checker before
  timewarp/text/wording.py);
* both error rates, measured over every text the generation stages send, on sample data whose
  captions are like FineVideo's: a careless model (tests/fake_openai.py: insertions, duplicates,
  swaps across quotes and labels, truncations, the answer leaking into the question, reversed or
  shortened captions, flipped direction words) gets 0 fields through; a careful one (synonyms,
  reordered clauses, "Someone", "In the video,") gets >= 90% accepted;
* the stages end to end against both models over HTTP: every SFT answer, preference pair and
  benchmark key is what the test's own oracle (test_generation: clip times, shuffled timeline) says.
"""
from __future__ import annotations

import collections
import json
import random
import shutil
from pathlib import Path

import pytest

from fake_openai import CAREFUL, CARELESS, FakeOpenAI, RewordingModel  # noqa: E402
from rewording_data import person_root, write_video  # noqa: E402
from test_generation import oracle, real_order, shuffled_order  # noqa: E402

from stages import run_stage  # noqa: E402
from timewarp.benchmark import generate_normal_benchmark, generate_shuffled_benchmark  # noqa: E402
from timewarp.pref_data import (generate_pref_explicit, generate_sft_explicit, merge_normal_captions,  # noqa: E402
                                merge_shuffled_captions)
from timewarp.text.temporal import (answer, answer_text, pick_mcqs, pick_questions,  # noqa: E402
                               question_text)
from timewarp.text.textgen import Rewrite, TemplateBackend, validate_field  # noqa: E402

CAPS = [
    "The person feeds the cat.",                                            # 0
    "The person closes the window. The person pours water into a glass.",   # 1
    "The person tunes a guitar.",                                           # 2
    "The person ties a red ribbon. The person waves at the camera.",        # 3
    "The person draws a circle.",                                           # 4
]


def sft(kind: str, events: tuple, phrasing: int = 0, captions=CAPS) -> Rewrite:
    """The Rewrite generate_sft_explicit builds for a question on the real order."""
    ans = answer(kind, events, range(len(captions)))
    rec = {"qid": f"v/sft/{kind}", "kind": kind, "events": list(events), "answer_clips": list(ans),
           "question": question_text(kind, events, captions, phrasing),
           "answer": answer_text(kind, events, ans, captions, phrasing)}
    return generate_sft_explicit.rewrite_qa(rec, list(captions))


def pref(kind: str, events: tuple, bad_order: list, phrasing: int = 0, captions=CAPS) -> Rewrite:
    """The Rewrite generate_pref_explicit builds for a pair (chosen: real order, rejected: ``bad_order``)."""
    good, bad = answer(kind, events, range(len(captions))), answer(kind, events, bad_order)
    rec = {"pid": f"v/pref/{kind}", "kind": kind, "events": list(events), "chosen_clips": list(good),
           "rejected_clips": list(bad), "chosen": answer_text(kind, events, good, captions, phrasing),
           "rejected": answer_text(kind, events, bad, captions, phrasing)}
    return generate_pref_explicit.rewrite_pair(rec, list(captions))


def caption(captions=CAPS) -> Rewrite:
    """The Rewrite merge_normal_captions builds."""
    return Rewrite("v", {"caption": " ".join(captions)}, keep={"caption": list(captions)}, caption=True,
                   captions=list(captions), events=tuple(captions))


# ---------------------------------------------------------------- the issue's accepted examples

ORDER3 = sft("order_three", (4, 1, 0), 1)   # "Put these events in the order the video shows them: (1) ... (2) ... (3) ..."
WHICH = sft("which_first", (3, 0), 0)      # answer: "The person feeds the cat" comes first; "... ribbon. ..." later
WHICH_Q2 = sft("which_first", (2, 3), 2)   # "Of these two events, which one is shown earlier: "A" or "B"?"
AFTER_Q2 = sft("after", (1,), 2)           # "Once "The person closes the window. ..." is over, what comes next ...?"
WHICH_Q0 = sft("which_first", (0, 4), 0)
PAIR = pref("order_three", (4, 1, 0), [4, 3, 2, 1, 0], 0)


def test_templates_are_what_the_examples_reword():
    assert ORDER3.fields["question"] == ("Put these events in the order the video shows them: (1) The person draws a "
                                         "circle. (2) The person closes the window. The person pours water into a "
                                         "glass. (3) The person feeds the cat.")
    assert ORDER3.fields["answer"] == ("The order is: first the person feeds the cat, next the person closes the "
                                       "window. The person pours water into a glass, and last the person draws a circle.")
    assert WHICH.fields["answer"] == ('"The person feeds the cat" comes first; "The person ties a red ribbon. The '
                                      'person waves at the camera" happens later.')
    assert WHICH_Q2.fields["question"] == ('Of these two events, which one is shown earlier: "The person tunes a '
                                           'guitar" or "The person ties a red ribbon. The person waves at the camera"?')


ISSUE_EXAMPLES = [
    ("event put in front of an order_three question", ORDER3, "question",
     "The person feeds the cat. " + ORDER3.fields["question"]),
    ("order_three answer ends with that extra event", ORDER3, "answer", ORDER3.fields["answer"] + " The person feeds the cat."),
    ("answer opens with a sentence of the later event", WHICH, "answer",
     "The person waves at the camera. " + WHICH.fields["answer"]),
    ("a sentence of the later event moved in front", WHICH, "answer",
     'The person waves at the camera. "The person feeds the cat" comes first; "The person ties a red ribbon" happens later.'),
    ("sentences moved across the quotes", WHICH_Q2, "question",
     'The person tunes a guitar" or "The person ties a red ribbon. Of these two events, which one is shown earlier: '
     '"The person waves at the camera. The person tunes a guitar"?'),
    ("a sentence moved into the other quote", WHICH_Q2, "question",
     'Of these two events, which one is shown earlier: "The person tunes a guitar. The person waves at the camera" or '
     '"The person ties a red ribbon"?'),
    ("question cut off before it asks", AFTER_Q2, "question",
     'Once "The person closes the window. The person pours water into a glass.'),
    ("answer appended to the question", WHICH_Q0, "question",
     WHICH_Q0.fields["question"] + ' The person feeds the cat" comes first; "The person draws a circle.'),
    ("rejected answer repeats the chosen one", PAIR, "rejected", PAIR.fields["rejected"] + " " + PAIR.fields["chosen"]),
    ("chosen answer repeats the rejected one", PAIR, "chosen", PAIR.fields["chosen"] + " " + PAIR.fields["rejected"]),
]


@pytest.mark.parametrize("name,item,field,reply", ISSUE_EXAMPLES, ids=[e[0] for e in ISSUE_EXAMPLES])
def test_issue_examples_are_refused(name, item, field, reply):
    assert validate_field(item, field, " ".join(reply.split())) is not None


MORE_REFUSED = [
    ("merged caption reversed", caption(), "caption", " ".join(reversed(CAPS))),
    ("merged caption shortened by a sentence", caption(), "caption", " ".join(CAPS).replace(" The person pours water into a glass.", "")),
    ("merged caption shortened by an event", caption(), "caption", " ".join(CAPS[:2] + CAPS[3:])),
    ("merged caption names an event twice", caption(), "caption", " ".join(CAPS + CAPS[-1:])),
    ("answer gains a question mark", sft("after", (1,), 0), "answer", "Right after that, does the person tune a guitar?"),
    ("text after the question mark", sft("after", (1,), 0), "question",
     sft("after", (1,), 0).fields["question"] + " Answer briefly."),
    ("direction phrases swapped", WHICH, "answer",
     '"The person feeds the cat" happens later; "The person ties a red ribbon. The person waves at the camera" comes first.'),
    ("order_three answer: first and last swapped", ORDER3, "answer", ORDER3.fields["answer"].replace(
        "first the", "\0").replace("last the", "first the").replace("\0", "last the")),
    ("negation added", WHICH, "answer", WHICH.fields["answer"].replace("comes first", "does not come first")),
    ("labels lost", ORDER3, "question", ORDER3.fields["question"].replace("(2) ", "")),
    ("answer truncated by a token limit", ORDER3, "answer", ORDER3.fields["answer"][:-12]),
]


@pytest.mark.parametrize("name,item,field,reply", MORE_REFUSED, ids=[e[0] for e in MORE_REFUSED])
def test_more_broken_replies_are_refused(name, item, field, reply):
    assert validate_field(item, field, reply) is not None


CAREFUL_OK = [
    (ORDER3, "question", "In the video, put these events in the order they are shown: (1) Someone draws a circle. "
                         "(2) Someone shuts the window. Someone pours water into a cup. (3) Someone feeds the cat."),
    (ORDER3, "answer", "The order is: first someone feeds the cat, then someone closes the window and pours water "
                       "into a glass, and last someone draws a circle."),
    (WHICH, "answer", 'In the video, "Someone feeds the cat" takes place first; "Someone ties a red bow. Someone waves '
                      'at the camera" happens later.'),
    (WHICH_Q2, "question", 'In the video, which is seen earlier: "The person tunes a guitar" or "The person ties a red '
                           'ribbon. The person waves at the camera"?'),
    (AFTER_Q2, "question", 'What comes next in the video, once "Someone closes the window. Someone pours water into '
                           'a glass" is over?'),
    (caption(), "caption", "First, someone feeds the cat. Then someone closes the window and pours water into a glass. "
                           "Next, someone tunes a guitar. After that, someone ties a red ribbon and waves at the camera. "
                           "Finally, someone draws a circle."),
]


@pytest.mark.parametrize("item,field,reply", CAREFUL_OK, ids=[f"{c[0].key}:{c[1]}" for c in CAREFUL_OK])
def test_careful_rewordings_are_accepted(item, field, reply):
    assert validate_field(item, field, reply) is None


# ---------------------------------------------------------------- both error rates, over what the stages send

class Recorder(TemplateBackend):
    """The template backend, keeping every Rewrite a stage asks for."""

    def __init__(self):
        self.items: list[Rewrite] = []

    def reword(self, items, desc="", reject=None):
        self.items += list(items)
        return super().reword(items, desc, reject)


def run_stages(root: Path, backend=None, args: list = ()) -> None:
    if backend is not None or not args:
        kw = {"backend": backend} if backend is not None else {}
        run_stage(merge_normal_captions, root, **kw)
        run_stage(merge_shuffled_captions, root, **kw)
        run_stage(generate_sft_explicit, root, **kw)
        run_stage(generate_pref_explicit, root, mirrored=True, hard_negatives=("reversed", "adjacent_swap"), **kw)
        run_stage(generate_normal_benchmark, root, **kw)
    else:
        base = ["--root_dir", str(root), *args]
        assert merge_normal_captions.main(base) == 0
        assert merge_shuffled_captions.main(base) == 0
        assert generate_sft_explicit.main(base) == 0
        assert generate_pref_explicit.main(base + ["--mirrored", "--hard_negatives", "reversed,adjacent_swap"]) == 0
        assert generate_normal_benchmark.main(base) == 0
    run_stage(generate_shuffled_benchmark, root)


@pytest.fixture(scope="module", params=["person", "processed"])
def sample_root(request, tmp_path_factory) -> Path:
    """24 videos of FineVideo-like captions, or the real pipeline's output of timewarp.sample_data videos."""
    if request.param == "processed":
        return Path(shutil.copytree(request.getfixturevalue("processed"), tmp_path_factory.mktemp("proc") / "out",
                                    ignore=shutil.ignore_patterns("*.mp4")))
    return person_root(tmp_path_factory.mktemp("person") / "out", videos=24)


def field_rates(items: list, careless: bool, tries: int = 3) -> tuple[int, int, collections.Counter]:
    model = RewordingModel(careless)
    sent = accepted = 0
    modes: collections.Counter = collections.Counter()
    for it in items:
        fields = {n: it.fields[n] for n in it.sent()}
        for k in range(tries):
            rng = random.Random(f"{k}:{it.key}")
            if it.caption and not careless:
                fields = {"caption": model.caption(list(it.events), rng)}
            for name, text in fields.items():
                mode, out = model.edit(name, text, fields, rng)
                if mode == "unchanged":   # a reply equal to the template would flatter the careful rate
                    continue
                sent += 1
                modes[mode] += 1
                if validate_field(it, name, " ".join(out.split())) is None:
                    accepted += 1
    return sent, accepted, modes


def test_error_rates_careless_zero_careful_at_least_90_percent(sample_root, tmp_path):
    root = shutil.copytree(sample_root, tmp_path / "out")
    rec = Recorder()
    run_stages(root, rec)
    items = [it for it in rec.items if it.sent()]
    kinds = collections.Counter(it.key.split("/")[2] if "/sft/" in it.key else "caption" if it.caption
                                else "benchmark" for it in items)
    big = len(list((root / "normal" / "annotations").glob("*.json"))) >= 20
    assert len(items) >= (200 if big else 20) and len(kinds) >= 5, kinds

    sent, accepted, modes = field_rates(items, careless=True)
    print(f"careless: {accepted}/{sent} fields accepted; modes {dict(modes)}")
    assert accepted == 0
    if big:
        assert set(modes) == set(CARELESS) and min(modes.values()) >= 20, modes

    sent, accepted, modes = field_rates(items, careless=False)
    print(f"careful: {accepted}/{sent} fields accepted ({accepted / sent:.1%})")
    assert accepted >= 0.9 * sent
    assert all(any(m in k for k in modes) for m in CAREFUL if big or m != "someone"), modes


# ---------------------------------------------------------------- end to end, over HTTP, checked by the oracle

def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


OUTPUTS = {"captions/normal.jsonl": "id", "captions/shuffled.jsonl": "id", "sft/sft_explicit.jsonl": "qid",
           "pref/pref_explicit.jsonl": "pid", "benchmark/normal.jsonl": "qid", "benchmark/shuffled.jsonl": "qid"}


def check_oracle(root: Path) -> int:
    """Every answer, pair and key against clip times and the shuffled timeline; returns records checked."""
    ann = {p.stem: json.loads(p.read_text()) for p in (root / "normal" / "annotations").glob("*.json")}
    shuf = {p.stem: json.loads(p.read_text()) for p in (root / "shuffled" / "shuffled_annotations").glob("*.json")}
    n = 0
    for r in rows(root / "sft" / "sft_explicit.jsonl"):
        assert r["answer_clips"] == oracle(r["kind"], r["events"], real_order(ann[r["id"]])), r
        n += 1
    for r in rows(root / "pref" / "pref_explicit.jsonl"):
        real = real_order(ann[r["id"]])
        other = shuffled_order(shuf[r["shuffled_id"]]) if r["shuffled_id"] else r["negative_order"]
        good, bad = (real, other) if r["negative"] != "mirrored" else (other, real)
        assert r["chosen_clips"] == oracle(r["kind"], r["events"], good), r
        assert r["rejected_clips"] == oracle(r["kind"], r["events"], bad), r
        n += 1
    for name, order_of in (("normal", lambda r: real_order(ann[r["id"]])),
                           ("shuffled", lambda r: shuffled_order(shuf[r["video_id"]]))):
        for r in rows(root / "benchmark" / f"{name}.jsonl"):
            assert r["option_clips"][r["answer_index"]] == oracle(r["kind"], r["events"], order_of(r)), r
            n += 1
    return n


@pytest.fixture(scope="module")
def template_run(sample_root, tmp_path_factory) -> Path:
    root = shutil.copytree(sample_root, tmp_path_factory.mktemp("tpl") / "out")
    run_stages(root)
    return root


def model_run(sample_root: Path, dest: Path, model: RewordingModel, retries: int) -> Path:
    root = shutil.copytree(sample_root, dest)
    with FakeOpenAI(responder=model) as server:
        run_stages(root, args=["--backend", "openai", "--llm_base_url", server.base_url, "--llm_model", server.model,
                               "--llm_max_retries", str(retries)])
    return root


def test_careless_model_end_to_end_changes_nothing(sample_root, template_run, tmp_path):
    model = RewordingModel(careless=True)
    root = model_run(sample_root, tmp_path / "out", model, retries=2)
    big = len(list((root / "normal" / "annotations").glob("*.json"))) >= 20
    assert len(model.log) > (500 if big else 50)
    checked = check_oracle(root)
    assert checked >= (150 if big else 20)
    refused = 0
    for rel, key in OUTPUTS.items():
        got, want = rows(root / rel), rows(template_run / rel)
        assert [r[key] for r in got] == [r[key] for r in want]
        for new, old in zip(got, want):
            assert new == old, (rel, new[key])     # every text the template's, word for word
        stage = {"captions/normal.jsonl": "merge_normal_captions", "captions/shuffled.jsonl": "merge_shuffled_captions",
                 "sft/sft_explicit.jsonl": "generate_sft_explicit", "pref/pref_explicit.jsonl": "generate_pref_explicit",
                 "benchmark/normal.jsonl": "generate_normal_benchmark"}.get(rel)
        if stage:
            rej = [r for r in rows(root / "rejects" / f"{stage}.jsonl") if r["reason"].startswith("model reply not used")]
            assert all("reply:" in r["detail"] for r in rej)
            refused += len(rej)
    assert refused >= (200 if big else 20)
    print(f"careless end to end: {len(model.log)} fields answered, {refused} records refused, {checked} checked by the oracle")


def test_careful_model_end_to_end_is_used_and_right(sample_root, template_run, tmp_path):
    model = RewordingModel(careless=False)
    root = model_run(sample_root, tmp_path / "out", model, retries=0)
    check_oracle(root)
    said = {(name, tpl, out) for _, name, tpl, out in model.log}
    asked = {(name, tpl) for _, name, tpl, _ in model.log}
    texts = {"sft/sft_explicit.jsonl": ("question", "answer"), "pref/pref_explicit.jsonl": ("chosen", "rejected"),
             "benchmark/normal.jsonl": ("question",)}
    used = sent = 0
    for rel, key in OUTPUTS.items():
        for new, old in zip(rows(root / rel), rows(template_run / rel), strict=True):
            changed = {k for k in new if new[k] != old[k]}
            assert changed <= {"question", "answer", "chosen", "rejected", "merged_caption", "method", "wording",
                               "prompt"}, (rel, changed)   # ids, events, clips, options, keys: as the template run
            for field in texts.get(rel, ()):
                if new[field] != old[field]:   # the careful model's own rewording of this very text
                    assert (field, old[field], new[field]) in said, (rel, new[key], field)
            if rel in texts and any((f, old[f]) in asked for f in texts[rel]):
                sent += 1
                used += new["wording"] == "llm"
    captions = [r for rel in ("captions/normal.jsonl", "captions/shuffled.jsonl") for r in rows(root / rel)]
    by_model = sum(r["method"] == "llm" for r in captions)
    print(f"careful end to end: {used}/{sent} records sent use the model's wording; {by_model}/{len(captions)} captions")
    big = len(list((root / "normal" / "annotations").glob("*.json"))) >= 20
    assert sent >= (150 if big else 15) and used >= 0.85 * sent and by_model >= 0.85 * len(captions)


# ---------------------------------------------------------------- events equal up to case and punctuation (issue 12)

TWINS = ["The person waves at the camera.", "The person feeds the cat.", "The person waves at the camera!",
         "The person draws a circle.", "the person  waves at the camera", "The person tunes a guitar.",
         "The person closes the window."]
SAME = {0, 2, 4}


def test_indistinguishable_events_are_never_asked_apart_nor_answer_their_own_question():
    asked = collections.Counter()
    for seed in range(300):
        for q in pick_questions(TWINS, 6, random.Random(seed)):
            asked[q.kind] += 1
            assert not SAME & set(q.events), q  # a twin is never the event a question names: which one?
            ans = answer(q.kind, q.events, range(len(TWINS)))
            if q.kind in ("after", "before") and ans:
                assert not (SAME & set(q.events) and SAME & set(ans)), q
    for seed in range(200):
        for m in pick_mcqs(TWINS, [4, 3, 2, 1, 0, 6, 5], 5, random.Random(seed)):
            opts = [o for o in m.options]
            named = [c for o in opts for c in o] if m.question.kind != "order_three" else list(m.question.events)
            assert len(SAME & set(named)) <= 1, m
            assert not SAME & set(m.question.events), m
    assert asked["after"] and asked["before"] and asked["which_first"] and asked["order_three"]


def test_pair_whose_answers_are_the_same_event_is_dropped(tmp_path):
    from timewarp.core.layout import Layout

    caps = ["The person waves at the camera.", "The person feeds the cat.", "The person tunes a guitar.",
            "THE PERSON WAVES AT THE CAMERA!"]
    layout = Layout(tmp_path)
    write_video(tmp_path, "v", caps, "train", 1, permutation=[3, 1, 2, 0])
    run_stage(generate_sft_explicit, tmp_path, qa_per_video=6)
    run_stage(generate_pref_explicit, tmp_path, hard_negatives=("reversed", "adjacent_swap"))
    kinds = {r["kind"] for r in rows(layout.sft_explicit_file)}
    assert {"first", "last"} <= kinds
    pairs = rows(layout.pref_explicit_file)
    key = lambda c: " ".join(caps[c].lower().replace("!", "").replace(".", "").split())  # noqa: E731
    for p in pairs:
        assert [key(c) for c in p["chosen_clips"]] != [key(c) for c in p["rejected_clips"]], p
    rej = rows(layout.root / "rejects" / "generate_pref_explicit.jsonl")
    assert any(r["id"].startswith("v/sft/") and r["reason"] == "rejected equals chosen" for r in rej)


def test_rewording_rules_are_one_module_with_public_names():
    """The words and checks of a rewording live in timewarp/text/wording.py, which needs nothing of the question
    kinds; no module reaches for a private name of wording.py or temporal.py."""
    import ast

    root = Path(__file__).resolve().parents[1] / "timewarp"
    imports = {}
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in ("timewarp.text.temporal", "timewarp.text.wording"):
                imports.setdefault(path.name, []).extend((node.module, a.name) for a in node.names)
    assert not any(m == "timewarp.text.temporal" for m, _ in imports.get("wording.py", []))
    private = [(f, m, n) for f, names in imports.items() for m, n in names if n.startswith("_")]
    assert private == []
    assert ("timewarp.text.wording", "EARLY") in imports["temporal.py"]  # the kinds' flip words are wording's words
