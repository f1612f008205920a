# Shared by the benchmark scripts: a throwaway directory with a master tree, a master serving
# on loopback, and waiting for minions. Source it after `set -eu`; it sets $ingot and $d and
# cds into $d. Uses target/release/ingot (built if missing) unless $INGOT names another.
top=$(cd "$(dirname "$0")/.." && pwd)
ingot=$(realpath "${INGOT:-$top/target/release/ingot}")
[ -x "$ingot" ] || cargo build --release --quiet --manifest-path "$top/Cargo.toml"
d=$(mktemp -d "${TMPDIR:-/tmp}/ingot-bench.XXXXXX")
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; [ -n "${KEEP:-}" ] || rm -rf "$d"; }
trap cleanup EXIT INT TERM
cd "$d"
export INGOT_HISTORY="$d/history.db"
ulimit -n 65536 2>/dev/null || true
"$ingot" init master m >/dev/null
"$ingot" certs init --master m >/dev/null

# start_master [PORT]: serves on 127.0.0.1:PORT (default: any), with $MASTER_ARGS; sets
# $master and $port.
start_master() {
  log="master-$(date +%s%N).log"
  # shellcheck disable=SC2086
  "$ingot" master --master m serve --listen "127.0.0.1:${1:-0}" ${MASTER_ARGS:-} >/dev/null 2>"$log" &
  master=$!
  pids="$pids $master"
  port=""
  for _ in $(seq 100); do
    port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$log" | head -1)
    [ -n "$port" ] && return 0
    sleep 0.1
  done
  echo "the master did not start: $(cat "$log")" >&2
  exit 1
}

# connected: how many minions the master has connected now.
connected() {
  "$ingot" manage --master m --list-nodes --json 2>/dev/null | grep -o '"state": *"connected"' | wc -l
}

# wait_connected N [TRIES]: waits (0.2 s per try) until N minions are connected.
wait_connected() {
  for _ in $(seq "${2:-600}"); do
    [ "$(connected)" -ge "$1" ] && return 0
    sleep 0.2
  done
  echo "only $(connected) of $1 minions connected" >&2
  exit 1
}

# start_swarm N: N minion identities in one process (`ingot minion swarm`); sets $swarm.
start_swarm() {
  "$ingot" minion swarm --count "$1" --dir swarm --master "127.0.0.1:$port" --issue-from m \
    2>swarm.log &
  swarm=$!
  pids="$pids $swarm"
}
