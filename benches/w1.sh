#!/bin/sh
# W1: one trivial step on N minions, end to end through a real master over mutual TLS on
# loopback. The minions are `ingot minion swarm --count N` (N identities in one process, each
# with a `me` fact and the built-in file resource); the prescription is one file per minion.
# Prints the wall time of `ingot master run` (first run: one file created per minion; second
# run: nothing to change) and the swarm's RSS.
# Usage: benches/w1.sh [MINIONS] [CONCURRENCY]   (uses target/release/ingot)
set -eu
minions=${1:-1000}
concurrency=${2:-0}
. "$(dirname "$0")/lib.sh"
mkdir -p out
cat >m/actors/prescribe <<PRESCRIBE
#!/bin/sh
# facts: {"me": "NAME", ...}: one file named after the minion.
me=\$(sed -n 's/.*"me":"\([^"]*\)".*/\1/p')
printf '[{"kind":"file","path":"$d/out/%s","content":"hello\\\\n"}]\n' "\$me"
PRESCRIBE
chmod +x m/actors/prescribe
start_master
start_swarm "$minions"
wait_connected "$minions"
for run in first second; do
  start=$(date +%s.%N)
  "$ingot" master --master m run --targets 'swarm-*' --concurrency "$concurrency" --no-history \
    >run.log 2>&1 || { tail -5 run.log; exit 1; }
  end=$(date +%s.%N)
  echo "W1 ($run run): $minions minions in $(echo "$end - $start" | bc) s"
done
created=$(ls out | wc -l)
[ "$created" -eq "$minions" ] || { echo "only $created files were created" >&2; exit 1; }
echo "swarm RSS: $(ps -o rss= -p "$swarm") KiB for $minions minions"
