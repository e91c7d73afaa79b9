"""The lmms-eval task folder: its yaml files load as lmms-eval loads them (PyYAML, `include`, `!function`
imported from utils.py beside the yaml), hold the documented task keys, and their functions run on
the real benchmark rows, loaded the way lmms-eval loads them (datasets.load_dataset(dataset_path,
**dataset_kwargs)). lmms-eval itself (torch, transformers, ...) is too heavy to install for a test."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from generated_output import build
from timewarp.core.layout import Layout
from timewarp.core.store import read_jsonl

TASK_DIR = Path(__file__).resolve().parents[1] / "lmms_eval_tasks" / "timewarp"
REQUIRED = ("task", "dataset_path", "test_split", "doc_to_visual", "doc_to_text", "doc_to_target",
            "process_results", "metric_list", "output_type")


def load_yaml_config(path: Path) -> dict:
    """lmms-eval's load_yaml_config, in brief: !function module.attr -> getattr(<yaml dir>/module.py, attr)."""
    def import_function(loader, node):
        *module, attr = loader.construct_scalar(node).split(".")
        spec = importlib.util.spec_from_file_location(".".join(module), path.parent / f"{'.'.join(module)}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return getattr(mod, attr)

    class Loader(yaml.FullLoader):
        pass

    Loader.add_constructor("!function", import_function)
    with open(path, "rb") as fh:
        config = yaml.load(fh, Loader=Loader)
    if "include" in config:
        base = load_yaml_config(path.parent / config.pop("include"))
        base.update(config)
        config = base
    return config


@pytest.fixture(scope="module")
def generated(processed, tmp_path_factory) -> Path:
    return build(processed, tmp_path_factory)


def test_yaml_needs_timewarp_root(monkeypatch):
    monkeypatch.delenv("TIMEWARP_ROOT", raising=False)
    with pytest.raises(RuntimeError, match="TIMEWARP_ROOT"):
        load_yaml_config(TASK_DIR / "timewarp_normal.yaml")
    group = yaml.safe_load((TASK_DIR / "timewarp.yaml").read_text())
    assert group["group"] == "timewarp" and group["task"] == ["timewarp_normal", "timewarp_shuffled"]


@pytest.mark.parametrize("name", ["normal", "shuffled"])
def test_task_runs_on_real_records(generated, monkeypatch, tmp_path, name):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("TIMEWARP_ROOT", str(generated))
    config = load_yaml_config(TASK_DIR / f"timewarp_{name}.yaml")
    for key in REQUIRED:
        assert key in config, key
    assert config["task"] == f"timewarp_{name}"
    src = getattr(Layout(generated), f"benchmark_{name}_file")
    assert config["dataset_kwargs"]["data_files"]["test"] == str(src.resolve())
    for m in config["metric_list"]:
        assert callable(m["aggregation"]) and isinstance(m["higher_is_better"], bool)

    datasets.disable_progress_bars()
    ds = datasets.load_dataset(path=config["dataset_path"], **config["dataset_kwargs"], cache_dir=str(tmp_path / "hf"))
    docs = [dict(d) for d in ds[config["test_split"]]]
    rows = read_jsonl(src)
    assert [d["qid"] for d in docs] == [r["qid"] for r in rows]

    kwargs = config["lmms_eval_specific_kwargs"]["default"]
    for doc in docs:
        (video,) = config["doc_to_visual"](doc)
        assert Path(video).is_file() and video.endswith(doc["video"])
        text = config["doc_to_text"](doc, kwargs)
        assert doc["question"] in text and all(f"{l}. {o}" in text for l, o in zip("ABCD", doc["options"]))
        assert text.endswith(kwargs["post_prompt"])
        assert doc[config["doc_to_target"]] == "ABCD"[doc["answer_index"]]

    metrics = {m["metric"]: m["aggregation"] for m in config["metric_list"]}

    def evaluate(outputs):
        per_metric = {k: [] for k in metrics}
        for doc, out in zip(docs, outputs):
            res = config["process_results"](doc, [out])
            assert set(res) == set(metrics)  # lmms-eval aggregates exactly the metrics it returns
            for k, v in res.items():
                per_metric[k].append(v)
        return {k: metrics[k](v) for k, v in per_metric.items()}

    assert evaluate([f"The answer is ({d['answer']})." for d in docs])["timewarp_accuracy"] == 100.0
    assert evaluate(["no idea" for _ in docs])["timewarp_accuracy"] == 0.0
    if name == "shuffled":
        story = evaluate([d["normal_answer"] for d in docs])
        changed = sum(d["key_changed"] for d in docs)
        assert 0 < changed < len(docs)
        assert story["timewarp_key_changed_accuracy"] == 0.0 and story["timewarp_story_order_rate"] == 100.0
        assert story["timewarp_accuracy"] == pytest.approx(100.0 * (len(docs) - changed) / len(docs))
