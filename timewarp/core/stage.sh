# Sourced by setup_dataset.sh and generate_data.sh: run one stage script, stop the pipeline when it fails.
# Needs $py (the python), $here (the repository), the array extra (TIMEWARP_ARGS, for every stage) and the script's name in $0.

interrupted=0
trap 'interrupted=1' INT  # Ctrl-C reaches the stage too (same process group); handled after it ends

stop_interrupted() {
  echo "$0: interrupted; rerun the same command to resume (finished work is kept)" >&2
  exit 130
}

# script_done <message>: the last line of a script that ran every stage (unless Ctrl-C came after the last one)
script_done() {
  [ "$interrupted" -eq 0 ] || stop_interrupted
  echo "$@" >&2
}

# run_stage <label> <script.py> [options...]: the options, then every TIMEWARP_ARGS option, go to the script.
run_stage() {
  local name="$1" script="$2"; shift 2
  local rc=0
  if [ "$interrupted" -eq 0 ]; then  # (Ctrl-C between two stages: run no further stage)
    echo "== $name" >&2
    # run_script.py: Ctrl-C even while the stage imports is status 130 without a traceback; the stage
    # prints nothing about it (TIMEWARP_SHELL_SCRIPT): the one line is this script's, below
    TIMEWARP_SHELL_SCRIPT="$0" "$py" "$here/timewarp/core/run_script.py" "$script" "$@" "${extra[@]}" || rc=$?
  fi
  if [ "$rc" -eq 130 ] || [ "$interrupted" -eq 1 ]; then
    stop_interrupted
  fi
  if [ "$rc" -ne 0 ]; then
    echo "$0: stage $name failed; fix the error above and rerun (finished work is kept)" >&2
    exit 1
  fi
}

# ray_once: with --executor ray and no --ray_address in TIMEWARP_ARGS, one local Ray instance for the whole
# script run, started here once (timewarp/core/ray_head.py, bound to 127.0.0.1) and joined by every stage, instead of
# each stage starting its own. It ends with the script however the script ends: its stdin is a pipe from here.
ray_once() {
  local a wants_ray=0 prev=""
  for a in "${extra[@]}"; do
    case "$prev $a" in "--executor ray"|*" --executor=ray") wants_ray=1;; esac
    case "$a" in --ray_address|--ray_address=*) return 0;; esac
    prev="$a"
  done
  [ "$wants_ray" -eq 1 ] || return 0
  coproc RAY_HEAD { exec "$py" "$(dirname "${BASH_SOURCE[0]}")/ray_head.py"; }
  local address mode
  if ! read -r address mode <&"${RAY_HEAD[0]}"; then
    [ "$interrupted" -eq 0 ] || exit 130  # Ctrl-C while Ray started: no stage has run
    echo "$0: could not start Ray (see above)" >&2
    exit 1
  fi
  trap 'exec {RAY_HEAD[1]}>&-; wait "$RAY_HEAD_PID" 2>/dev/null || true' EXIT
  [ -z "$mode" ] || export RAY_AUTH_MODE="$mode"
  extra+=(--ray_address "$address")
}
