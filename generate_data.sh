#!/usr/bin/env bash
# Usage: ./generate_data.sh <output_dir>
# On the output of ./setup_dataset.sh: merged captions (normal, shuffled) -> SFT QA -> preference
# pairs -> normal and shuffled benchmarks. Offline by default (template backend).
# Extra options for every stage can be given in TIMEWARP_ARGS: only options all six accept, i.e. the model
# options (--backend, --llm_base_url, --llm_model, --llm_*), --seed, --limit, --overwrite, --log_level and
# the shuffled folder names (--shuffled_dir_name, --annotation_dir_name, --video_dir_name); e.g.
# TIMEWARP_ARGS="--llm_base_url http://localhost:8000/v1 --llm_model Qwen/Qwen2.5-7B-Instruct".
# These stages run in-process (milliseconds per video): no --workers / --executor.
set -euo pipefail
if [ "$#" -ne 1 ]; then
  echo "usage: $0 <output_dir>" >&2
  echo "  e.g. $0 path/to/output   (the output_dir of ./setup_dataset.sh)" >&2
  exit 2
fi
out="$1"
if [ ! -d "$out" ]; then
  echo "$0: $out does not exist; run ./setup_dataset.sh <finevideo_root> $out <scale> first" >&2
  exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-python3}"
read -r -a extra <<< "${TIMEWARP_ARGS:-}"
# shellcheck source=timewarp/core/stage.sh
. "$here/timewarp/core/stage.sh"
stage() { local script="$1"; shift; run_stage "$(basename "$script" .py)" "$here/timewarp/$script" "$@"; }
stage pref_data/merge_normal_captions.py --root_dir "$out"
stage pref_data/merge_shuffled_captions.py --root_dir "$out"
stage pref_data/generate_sft_explicit.py --root_dir "$out"
stage pref_data/generate_pref_explicit.py --root_dir "$out" \
    --shuffled_dir_name shuffled --annotation_dir_name shuffled_annotations --video_dir_name shuffled_videos
stage benchmark/generate_normal_benchmark.py --root_dir "$out"
stage benchmark/generate_shuffled_benchmark.py --root_dir "$out"
script_done "done: captions in $out/captions, SFT data in $out/sft, preference pairs in $out/pref," \
     "benchmarks in $out/benchmark (rejects in $out/rejects, stats in $out/stats); to look at them:" \
     "python3 timewarp/report.py --root_dir $out && python3 timewarp/viewer.py --root_dir $out"
