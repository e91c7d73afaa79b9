#!/usr/bin/env bash
# Usage: ./setup_dataset.sh <finevideo_root> <output_dir> <scale>
# FineVideo -> normal videos + annotations -> checked -> shuffled videos + annotations.
# Extra options for every stage can be given in TIMEWARP_ARGS (e.g. TIMEWARP_ARGS="--workers 4"),
# options for preprocess.py alone in TIMEWARP_PREPROCESS_ARGS (e.g. TIMEWARP_PREPROCESS_ARGS="--test_fraction 0.5").
set -euo pipefail
if [ "$#" -ne 3 ]; then
  echo "usage: $0 <input_root> <output_dir> <scale>   (input_root: a FineVideo folder, .parquet or hf:// path; another dataset: TIMEWARP_PREPROCESS_ARGS=\"--source NAME\", docs/sources.md)" >&2
  echo "  e.g. $0 path/to/finevideo path/to/output 5000" >&2
  echo "  env: TIMEWARP_ARGS (options for every stage), TIMEWARP_PREPROCESS_ARGS (options for preprocess.py)" >&2
  exit 2
fi
case "$3" in ''|*[!0-9]*) echo "$0: <scale> must be a positive whole number, got '$3'" >&2; exit 2;; esac
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-python3}"
read -r -a extra <<< "${TIMEWARP_ARGS:-}"
read -r -a preprocess_extra <<< "${TIMEWARP_PREPROCESS_ARGS:-}"
# shellcheck source=timewarp/core/stage.sh
. "$here/timewarp/core/stage.sh"
stage() { local name="$1"; shift; run_stage "$name" "$here/timewarp/preprocess/$name.py" "$@"; }
ray_once  # --executor ray: one Ray instance for all four stages (timewarp/core/stage.sh)
stage preprocess --root_dir "$1" --save_dir "$2" --scale "$3" "${preprocess_extra[@]}"
stage filter_corrupted --root_dir "$2"
stage final_assertions --root_dir "$2"
stage shuffle_clips --root_dir "$2"
script_done "done: normal videos in $2/normal, shuffled videos in $2/shuffled; next: ./generate_data.sh $2"
