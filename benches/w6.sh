#!/bin/sh
# W6: master restart with N connected minions. The minions are `ingot minion swarm --count N`
# over mutual TLS on loopback; once all are connected the master is killed (SIGKILL) and
# started again on the same port. Prints the time from the restart until every minion is
# connected again. Usage: benches/w6.sh [MINIONS]   (uses target/release/ingot)
set -eu
minions=${1:-1000}
. "$(dirname "$0")/lib.sh"
start_master
start_swarm "$minions"
wait_connected "$minions"
kill -9 "$master"
wait "$master" 2>/dev/null || true
start=$(date +%s.%N)
start_master "$port"
wait_connected "$minions" 300
end=$(date +%s.%N)
echo "W6: $minions minions reconnected $(echo "$end - $start" | bc) s after the master restarted"
