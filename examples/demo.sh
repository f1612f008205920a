#!/bin/sh
# A demonstration of the runner: a script that writes to stdout, stderr and fd 3, run by
# `ingot run`, which labels everything it says as channel3 events.
set -e
here=$(cd "$(dirname "$0")" && pwd)
ingot=${INGOT:-$here/../target/release/ingot}
exec "$ingot" run --name demo -- "$here/demo-script.sh"
