#!/bin/sh
# W2 (Directord's own benchmark): 1000 sequential `RUN --skip-cache echo hello world` on 6
# minions through a real master over mutual TLS on loopback. Prints the wall time of the
# orchestration. Usage: benches/w2.sh [JOBS] [MINIONS]   (uses target/release/ingot)
set -eu
jobs=${1:-1000}
minions=${2:-6}
top=$(cd "$(dirname "$0")/.." && pwd)
ingot=$(realpath "${INGOT:-$top/target/release/ingot}")
[ -x "$ingot" ] || cargo build --release --quiet --manifest-path "$top/Cargo.toml"
d=$(mktemp -d "${TMPDIR:-/tmp}/ingot-w2.XXXXXX")
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; rm -rf "$d"; }
trap cleanup EXIT INT TERM
cd "$d"
export INGOT_HISTORY="$d/history.db"
"$ingot" init master m >/dev/null
"$ingot" certs init --master m >/dev/null
"$ingot" master --master m serve --listen 127.0.0.1:0 >/dev/null 2>master.log &
pids="$pids $!"
port=""
for _ in $(seq 100); do
  port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' master.log | head -1)
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "the master did not start: $(cat master.log)" >&2; exit 1; }
for i in $(seq "$minions"); do
  "$ingot" init minion "n$i" >/dev/null
  "$ingot" certs issue "n$i" --master m --out "n$i/certs" >/dev/null
  "$ingot" minion serve --minion "n$i" --master "127.0.0.1:$port" >/dev/null 2>"n$i.log" &
  pids="$pids $!"
done
for _ in $(seq 100); do
  up=$("$ingot" manage --master m --list-nodes --json 2>/dev/null | grep -o '"state": *"connected"' | wc -l)
  [ "$up" -ge "$minions" ] && break
  sleep 0.1
done
{ echo "- name: w2"; echo "  jobs:"; for _ in $(seq "$jobs"); do echo "  - RUN: --skip-cache echo hello world"; done; } >w2.yaml
start=$(date +%s.%N)
"$ingot" orchestrate w2.yaml --master m --check >orchestrate.log 2>&1 || { tail -5 orchestrate.log; exit 1; }
end=$(date +%s.%N)
tail -1 orchestrate.log
echo "W2: $jobs jobs on $minions minions in $(echo "$end - $start" | bc) s"
