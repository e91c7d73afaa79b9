"""Run inside lmms-eval's own environment: its task loader and metric code on TimeWarp's task folder.

  TIMEWARP_ROOT=<out> PYTHONPATH=<TimeWarp checkout> <venv>/bin/python lmms_eval_reader.py <jobs.json>
  jobs: {name: [task folder, {task: {qid: prediction text}}]}

lmms_eval.tasks.TaskManager(include_path=folder) and get_task_dict(["timewarp"]) build the group from the yaml
files (the dataset through datasets' JSON loader); for every document of each task: doc_to_text,
doc_to_visual and process_results on the given prediction, then each metric's aggregation.
Prints {job: {task: {"docs": [{"qid", "text", "visual"}], "metrics": {name: value}}}}.
"""
import json
import sys


def read(task_dir: str, predictions: dict) -> dict:
    from lmms_eval.tasks import TaskManager, get_task_dict

    tasks = get_task_dict(["timewarp"], TaskManager(verbosity="ERROR", include_path=task_dir))
    out = {}

    def walk(d):
        for key, value in d.items():
            if isinstance(value, dict):
                walk(value)
            else:
                yield_task(value)

    def yield_task(task):
        docs, items = [], {}
        for doc in task.test_docs():
            results = task.process_results(doc, [predictions[task.config.task][doc["qid"]]])
            for metric, item in results.items():
                items.setdefault(metric, []).append(item)
            docs.append({"qid": doc["qid"], "text": task.doc_to_text(doc), "visual": task.doc_to_visual(doc)})
        agg = task.aggregation()
        out[task.config.task] = {"docs": docs, "metrics": {m: agg[m](v) for m, v in items.items()}}

    walk(tasks)
    return out


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    print(json.dumps({job: read(*args) for job, args in jobs.items()}))
