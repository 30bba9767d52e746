#!/usr/bin/env bash
# Run the README's test command with every core kept busy, as on a loaded CI machine or a laptop doing other
# work: one `yes > /dev/null` per core, started here and stopped here whatever the outcome.
set -euo pipefail
cd "$(dirname "$0")/.."
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap stop EXIT
for _ in $(seq 1 "$(nproc)"); do
  yes >/dev/null &
  pids+=("$!")
done
echo "test_under_load: ${#pids[@]} busy loops (pids ${pids[*]}); load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
make test "$@"
