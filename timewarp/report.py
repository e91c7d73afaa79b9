"""A one-page HTML report of an output root_dir: what was made, what was dropped and why.

  python timewarp/report.py --root_dir <out>        ->  <out>/report/index.html (+ PNG plots beside it)

Plots (each only when its data exists): clips per video, clip durations, rejects by stage and reason,
question kinds (SFT, preference, benchmarks), how often the shuffled benchmark's key differs from the
normal one (overall and per kind), and model tokens / cost per stage when the openai backend was used
(stats/<stage>.json "llm_usage"). Below them, the table of every stage's stats (items in/out,
rejects, seconds). Read-only on the data; only report/ is written.
"""
from __future__ import annotations

import argparse
import collections
import html
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from timewarp.core.errors import UsageError
from timewarp.core.layout import Layout
from timewarp.core.stage import StageConfig, add_common_args, add_shuffled_dir_args, cli, log, require_root
from timewarp.core.store import atomic_path, read_json, read_jsonl, write_text

# every stage that writes stats/<stage>.json, in the order a full run calls them (a name not here sorts last)
STAGE_ORDER = ["preprocess", "filter_corrupted", "final_assertions", "shuffle_clips", "merge_normal_captions",
               "merge_shuffled_captions", "generate_sft_explicit", "generate_pref_explicit",
               "generate_normal_benchmark", "generate_shuffled_benchmark", "generate_pref_implicit", "combine_pref",
               "export"]


def _rows(path: Path) -> list:
    try:
        return read_jsonl(path) if path.is_file() else []
    except (OSError, ValueError) as exc:
        log.warning("skipping %s: %s", path, exc)
        return []


def _stage_key(name: str):
    return (STAGE_ORDER.index(name) if name in STAGE_ORDER else len(STAGE_ORDER), name)


def read_stats(layout: Layout) -> dict:
    """stats/<stage>.json of every stage, in pipeline order (an unreadable file is skipped)."""
    stats = {}
    if layout.stats_dir.is_dir():
        for p in sorted(layout.stats_dir.glob("*.json")):
            try:
                stats[p.stem] = read_json(p)
            except (OSError, ValueError):
                log.warning("skipping %s: not valid JSON", p)
    return dict(sorted(stats.items(), key=lambda x: _stage_key(x[0])))


def collect(layout: Layout) -> dict:
    """Everything the report shows, as plain data (tests and other tools can use it too)."""
    anns = []
    if layout.normal_annotations_dir.is_dir():
        for p in sorted(layout.normal_annotations_dir.glob("*.json")):
            try:
                anns.append(read_json(p))
            except (OSError, ValueError):
                continue
    clips_per_video = [len(a.get("clips") or []) for a in anns]
    durations = [float(c["end"]) - float(c["start"]) for a in anns for c in (a.get("clips") or [])
                 if isinstance(c, dict) and "start" in c and "end" in c]
    rejects = collections.Counter()
    if layout.rejects_dir.is_dir():
        for p in sorted(layout.rejects_dir.glob("*.jsonl")):
            for r in _rows(p):
                rejects[(r.get("stage") or p.stem, r.get("reason", "?"))] += 1
    stats = read_stats(layout)
    kinds = {}
    for label, path in (("SFT", layout.sft_explicit_file), ("preference", layout.pref_explicit_file),
                        ("normal benchmark", layout.benchmark_normal_file),
                        ("shuffled benchmark", layout.benchmark_shuffled_file)):
        rows = _rows(path)
        if rows:
            kinds[label] = collections.Counter(r.get("kind", "?") for r in rows)
    shuffled = _rows(layout.benchmark_shuffled_file)
    key_changed = {}
    if shuffled:
        by_kind = collections.defaultdict(list)
        for r in shuffled:
            by_kind[r.get("kind", "?")].append(bool(r.get("key_changed")))
        key_changed = {"all": (sum(bool(r.get("key_changed")) for r in shuffled), len(shuffled)),
                       **{k: (sum(v), len(v)) for k, v in sorted(by_kind.items())}}
    usage = {s: st["llm_usage"] for s, st in stats.items() if isinstance(st.get("llm_usage"), dict) and st["llm_usage"]}
    n_shuffled = len(list(layout.shuffled_annotations_dir.glob("*.json"))) if layout.shuffled_annotations_dir.is_dir() else 0
    return {"n_videos": len(anns), "splits": dict(collections.Counter(a.get("split", "?") for a in anns)),
            "n_shuffled": n_shuffled,
            "clips_per_video": clips_per_video, "clip_durations": durations,
            "rejects": {f"{s}: {r}": n for (s, r), n in sorted(rejects.items(), key=lambda x: (_stage_key(x[0][0]), x[0][1]))},
            "stats": stats,
            "kinds": {k: dict(sorted(v.items())) for k, v in kinds.items()}, "key_changed": key_changed, "usage": usage}


# ---------------------------------------------------------------- plots

def _figure(path: Path, draw, width: float = 6.4, height: float = 3.6) -> Path:
    # Imported here on purpose: the Agg backend (files only, no display needed) must be chosen before pyplot is
    # imported, and choosing it at module import would change the backend of any program that imports this module
    # (publish.py imports read_stats; a notebook would lose its inline plots), and load matplotlib for nothing.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    try:
        draw(ax)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path


def plots(data: dict, out_dir: Path) -> list[tuple[str, str, str]]:
    """Write the PNGs; return (title, file name, caption) for each."""
    made = []

    def add(name, title, caption, draw, height=3.6):
        _figure(out_dir / name, draw, height=height)
        made.append((title, name, caption))

    cpv = data["clips_per_video"]
    if cpv:
        def draw(ax):
            counts = collections.Counter(cpv)
            xs = sorted(counts)
            ax.bar(xs, [counts[x] for x in xs], color="#4472c4")
            ax.set_xlabel("clips in the video")
            ax.set_ylabel("videos")
            ax.set_xticks(xs)
        add("clips_per_video.png", "Clips per video", f"{len(cpv)} videos, {sum(cpv)} clips", draw)
    durs = data["clip_durations"]
    if durs:
        def draw(ax):
            ax.hist(durs, bins=min(30, max(5, len(durs) // 3)), color="#70ad47")
            ax.set_xlabel("clip duration (s)")
            ax.set_ylabel("clips")
        add("clip_durations.png", "Clip durations",
            f"median {sorted(durs)[len(durs) // 2]:.1f} s, min {min(durs):.1f} s, max {max(durs):.1f} s", draw)
    rej = data["rejects"]
    if rej:
        def draw(ax):
            labels = list(rej)[::-1]
            ax.barh(range(len(labels)), [rej[k] for k in labels], color="#c00000")
            ax.set_yticks(range(len(labels)))
            ax.set_yticklabels(labels, fontsize=7)
            ax.set_xlabel("rejected items")
        add("rejects.png", "Rejects by stage and reason", f"{sum(rej.values())} rejected items", draw,
            height=max(2.4, 0.3 * len(rej) + 1.2))
    kinds = data["kinds"]
    if kinds:
        def draw(ax):
            all_kinds = sorted({k for c in kinds.values() for k in c})
            width = 0.8 / len(kinds)
            for j, (label, c) in enumerate(kinds.items()):
                ax.bar([i + j * width for i in range(len(all_kinds))], [c.get(k, 0) for k in all_kinds], width, label=label)
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(all_kinds))])
            ax.set_xticklabels(all_kinds, rotation=30, ha="right", fontsize=8)
            ax.set_ylabel("questions")
            ax.legend(fontsize=7)
        add("question_kinds.png", "Question kinds", ", ".join(f"{k}: {sum(v.values())}" for k, v in kinds.items()), draw)
    kc = data["key_changed"]
    if kc:
        def draw(ax):
            labels = list(kc)
            rates = [100.0 * a / b if b else 0.0 for a, b in kc.values()]
            ax.bar(range(len(labels)), rates, color=["#7030a0"] + ["#b4a7d6"] * (len(labels) - 1))
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
            ax.set_ylabel("% questions whose key changed")
            ax.set_ylim(0, 100)
        a, b = kc["all"]
        add("key_changed.png", "Shuffled benchmark: key-changed rate",
            f"{a} of {b} questions ({100.0 * a / b:.0f}%) have a different answer on the shuffled video" if b else "", draw)
    usage = data["usage"]
    if usage:
        def draw(ax):
            stages = list(usage)
            p = [float(usage[s].get("prompt_tokens", 0)) for s in stages]
            c = [float(usage[s].get("completion_tokens", 0)) for s in stages]
            ax.bar(range(len(stages)), p, label="prompt tokens", color="#4472c4")
            ax.bar(range(len(stages)), c, bottom=p, label="completion tokens", color="#ed7d31")
            ax.set_xticks(range(len(stages)))
            ax.set_xticklabels(stages, rotation=30, ha="right", fontsize=8)
            ax.set_ylabel("tokens")
            ax.legend(fontsize=7)
            for i, s in enumerate(stages):
                if usage[s].get("cost_usd") is not None:
                    ax.annotate(f"${float(usage[s]['cost_usd']):.4f}", (i, p[i] + c[i]), ha="center", va="bottom", fontsize=7)
        total = sum(float(u.get("cost_usd") or 0) for u in usage.values())
        add("tokens.png", "Model tokens and cost", f"total cost ${total:.4f}", draw)
    return made


# ---------------------------------------------------------------- html

def _stats_table(stats: dict) -> str:
    head = "<tr><th>stage</th><th>items in</th><th>items out</th><th>rejected</th><th>top reasons</th><th>seconds</th><th>counts</th></tr>"
    rows = []
    for name, st in stats.items():
        reasons = sorted((st.get("rejects_by_reason") or {}).items(), key=lambda x: -x[1])[:3]
        counts = st.get("counts") or {}
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            name, st.get("items_in", ""), st.get("items_out", ""), st.get("rejected", ""),
            "; ".join(f"{r}: {n}" for r, n in reasons), st.get("seconds", ""),
            "; ".join(f"{k}: {v}" for k, v in counts.items()))) + "</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def render(layout: Layout, data: dict, figures: list) -> str:
    splits = ", ".join(f"{k}: {v}" for k, v in sorted(data["splits"].items()))
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>TimeWarp report</title><style>"
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}"
        "figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}figcaption{font-size:13px;color:#555}"
        "</style></head><body>",
        "<h1>TimeWarp report</h1>",
        f"<p>root_dir: <code>{html.escape(str(layout.root))}</code><br>videos: {data['n_videos']} ({html.escape(splits)}); "
        f"shuffled videos: {data['n_shuffled']} (<code>{html.escape(layout.rel(layout.shuffled_annotations_dir))}</code>)</p>",
        # the example viewer (timewarp/viewer.py) lives in report/viewer/
        "<p><a href='viewer/index.html'>Browse the examples</a>: normal and shuffled videos side by side, clips, "
        "questions, pairs and benchmark keys (made by <code>python timewarp/viewer.py --root_dir "
        f"{html.escape(str(layout.root))}</code>).</p>",
    ]
    if not figures:
        parts.append("<p>No data to plot yet: run ./setup_dataset.sh and ./generate_data.sh first.</p>")
    for title, name, caption in figures:
        parts.append(f"<figure><h3>{html.escape(title)}</h3><img src='{html.escape(name)}' alt='{html.escape(title)}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("<h2>Stages</h2>" + (_stats_table(data["stats"]) if data["stats"] else "<p>no stats/ files</p>"))
    parts.append("</body></html>\n")
    return "\n".join(parts)


@dataclass(frozen=True, kw_only=True)
class Config(StageConfig):
    """No options of its own: the output root_dir (with its shuffled folder names) is all it reads."""


def run(cfg: Config) -> Path:
    layout = cfg.layout
    root = require_root(layout.root, "--root_dir")
    if not any(p.is_dir() for p in (layout.normal_annotations_dir, layout.stats_dir)):
        raise UsageError(f"{root} holds no annotations or stats: is it the output root_dir of ./setup_dataset.sh?")
    data = collect(layout)
    layout.report_dir.mkdir(parents=True, exist_ok=True)
    figures = plots(data, layout.report_dir)
    write_text(layout.report_file, render(layout, data, figures))
    with atomic_path(layout.report_dir / "data.json") as tmp:
        tmp.write_text(json.dumps({k: v for k, v in data.items() if k != "stats"}, indent=2, default=list) + "\n",
                       encoding="utf-8")
    print(f"[report] {len(figures)} plots and the stats of {len(data['stats'])} stages; open in a browser: "
          f"{layout.report_file.resolve().as_uri()}")
    return layout.report_file


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="report.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root_dir", required=True, help="output root_dir of setup_dataset.sh (+ generate_data.sh)")
    add_shuffled_dir_args(p)
    add_common_args(p, workers=False, seed=False, limit=False, overwrite=False)
    return p


def main(argv: Optional[list] = None) -> int:
    return cli(lambda a: run(Config.from_args(a)) and 0, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
