#!/bin/sh
# W2 (Directord's own benchmark): 1000 sequential `RUN --skip-cache echo hello world` on 6
# minions through a real master over mutual TLS on loopback. Prints the wall time of the
# orchestration and the first agent's RSS, idle (after 3 heartbeats) and after the jobs.
# Usage: benches/w2.sh [JOBS] [MINIONS] [PIPELINE]   (uses target/release/ingot)
# PIPELINE (default 1) is `orchestrate --pipeline`: jobs of the queue sent ahead of the slowest
# minion.
set -eu
jobs=${1:-1000}
minions=${2:-6}
pipeline=${3:-1}
. "$(dirname "$0")/lib.sh"
# Heartbeats every second, so the idle RSS below is taken after the agent answered some.
MASTER_ARGS="--heartbeat 1"
start_master
for i in $(seq "$minions"); do
  "$ingot" init minion "n$i" >/dev/null
  "$ingot" certs issue "n$i" --master m --out "n$i/certs" >/dev/null
  "$ingot" minion serve --minion "n$i" --master "127.0.0.1:$port" >/dev/null 2>"n$i.log" &
  pids="$pids $!"
  [ "$i" -eq 1 ] && agent=$!
done
wait_connected "$minions" 100
{ echo "- name: w2"; echo "  jobs:"; for _ in $(seq "$jobs"); do echo "  - RUN: --skip-cache echo hello world"; done; } >w2.yaml
sleep 3
echo "idle agent RSS (after 3 heartbeats): $(ps -o rss= -p "$agent") KiB"
start=$(date +%s.%N)
"$ingot" orchestrate w2.yaml --master m --poll --check --pipeline "$pipeline" >orchestrate.log 2>&1 || { tail -5 orchestrate.log; exit 1; }
end=$(date +%s.%N)
tail -1 orchestrate.log
echo "agent RSS after: $(ps -o rss= -p "$agent") KiB"
echo "W2: $jobs jobs on $minions minions (pipeline $pipeline) in $(echo "$end - $start" | bc) s"
