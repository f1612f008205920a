#!/bin/sh
# W1: one trivial step on N minions, end to end through a real master over mutual TLS on
# loopback. The minions are `ingot minion swarm --count N` (N identities in one process, each
# with a `me` fact and the built-in file resource); the prescription is one file per minion.
# Prints the wall time of `ingot master run` (first run: one file created per minion; second
# run: nothing to change) and the swarm's RSS.
# Usage: benches/w1.sh [MINIONS] [CONCURRENCY]   (uses target/release/ingot)
# PRESCRIBE=each runs actors/prescribe once per minion instead of one batch prescribe.
# HISTORY=1 records the runs in the historian (as `master run` does by default).
set -eu
minions=${1:-1000}
concurrency=${2:-0}
. "$(dirname "$0")/lib.sh"
mkdir -p out
if [ "${PRESCRIBE:-batch}" = batch ]; then
  # A batch prescribe (SPEC §4 batches): one run for every minion whose facts are in.
  cat >m/actors/prescribe <<PRESCRIBE
#!/bin/sh
[ "\${1:-}" = describe ] && { echo '{"batch": true}'; exit 0; }
# [{"me": "NAME"}, ...] -> [[one file named after the minion], ...]
sed 's|{"me":"\([^"]*\)"}|[{"kind":"file","path":"$d/out/\1","content":"hello\\\\n"}]|g'
PRESCRIBE
else
  cat >m/actors/prescribe <<PRESCRIBE
#!/bin/sh
# facts: {"me": "NAME", ...}: one file named after the minion.
me=\$(sed -n 's/.*"me":"\([^"]*\)".*/\1/p')
printf '[{"kind":"file","path":"$d/out/%s","content":"hello\\\\n"}]\n' "\$me"
PRESCRIBE
fi
chmod +x m/actors/prescribe
start_master
start_swarm "$minions"
wait_connected "$minions"
history=--no-history
[ -n "${HISTORY:-}" ] && history=""
for run in first second; do
  start=$(date +%s.%N)
  "$ingot" master --master m run --targets 'swarm-*' --concurrency "$concurrency" $history \
    >run.log 2>&1 || { tail -5 run.log; exit 1; }
  end=$(date +%s.%N)
  echo "W1 ($run run): $minions minions in $(echo "$end - $start" | bc) s"
done
created=$(ls out | wc -l)
[ "$created" -eq "$minions" ] || { echo "only $created files were created" >&2; exit 1; }
echo "swarm RSS: $(ps -o rss= -p "$swarm") KiB for $minions minions"
