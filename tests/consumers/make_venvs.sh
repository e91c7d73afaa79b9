#!/usr/bin/env bash
# Make (once; kept while the pinned specs do not change) the virtual environments of the consumer tier:
#   tests/consumers/make_venvs.sh [llamafactory] [ms-swift] [lmms-eval]      (default: all three)
# in $TIMEWARP_VENVS (default ~/.cache/timewarp/venvs). Each gets the CPU torch wheel (pip's find-links on CI
# and the dev machines) and the consumer at the version the tests were written against. torchvision and
# torchaudio are removed again: their PyPI wheels are CUDA builds that fail to load beside the CPU torch
# (torchvision::nms), and a broken one breaks transformers' imports; without them transformers runs.
# Measured on 2 cores (pip cache warm for torch): llamafactory 219 s / 2.1 GB, ms-swift 138 s / 2.0 GB,
# lmms-eval 424 s / 2.5 GB.
set -euo pipefail
VENVS="${TIMEWARP_VENVS:-$HOME/.cache/timewarp/venvs}"
declare -A SPEC=([llamafactory]="llamafactory==0.9.5" [ms-swift]="ms-swift==4.6.0" [lmms-eval]="lmms-eval==0.7.3")
names=("$@"); [ ${#names[@]} -eq 0 ] && names=(llamafactory ms-swift lmms-eval)
mkdir -p "$VENVS"
for name in "${names[@]}"; do
  spec="${SPEC[$name]:?unknown consumer $name (llamafactory, ms-swift, lmms-eval)}"
  dir="$VENVS/$name"
  if [ -f "$dir/.timewarp-spec" ] && [ "$(cat "$dir/.timewarp-spec")" = "torch==2.13.0 $spec" ]; then
    echo "[make_venvs] $name: $dir is ready"; continue
  fi
  start=$(date +%s)
  rm -rf "$dir" && python3 -m venv "$dir"
  "$dir/bin/pip" install -q torch==2.13.0 "$spec"
  "$dir/bin/pip" uninstall -y -q torchvision torchaudio 2>/dev/null || true
  echo "torch==2.13.0 $spec" > "$dir/.timewarp-spec"   # written last: an interrupted install is redone
  echo "[make_venvs] $name: $spec in $dir, $(( $(date +%s) - start )) s, $(du -sh "$dir" | cut -f1)"
done
