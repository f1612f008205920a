#!/bin/sh
# The main demonstration: builds ingot, lays out a master and a minion in a throwaway directory,
# and applies the `basics` example to a throwaway root (a directory standing in for /) twice:
# the first run changes things, the second finds nothing to do. Then it shows the history.
#
#   ./examples/demo.sh            # keeps the demo directory and prints where it is
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
if [ -z "${INGOT:-}" ]; then
  echo "building ingot (release, fat LTO: several minutes the first time)..." >&2
  cargo build --release --manifest-path "$top/Cargo.toml"
  INGOT="$top/target/release/ingot"
fi
demo=$(mktemp -d "${TMPDIR:-/tmp}/ingot-demo.XXXXXX")
root="$demo/root"

# A throwaway root with just enough of /etc for users and groups.
mkdir -p "$root/etc"
for f in passwd group shadow gshadow; do
  grep '^root:' "/etc/$f" >"$root/etc/$f" 2>/dev/null || : >"$root/etc/$f"
done

"$INGOT" init master "$demo/master" >/dev/null
"$INGOT" init minion "$demo/minion" >/dev/null
cp "$here/basics/master/actors/prescribe" "$demo/master/actors/"

export INGOT_ROOT="$root" INGOT_HISTORY="$demo/master/logs/history.db"
run() { echo; echo "\$ $*"; "$@"; }
run "$INGOT" apply --master "$demo/master" --minion "$demo/minion" --name demo
run "$INGOT" history show last --failed
run "$INGOT" apply --master "$demo/master" --minion "$demo/minion" --name demo
run "$INGOT" history list --limit 2
run cat "$root/etc/motd"
echo
echo "demo tree kept in $demo (the root is $root); remove it with: rm -rf $demo"
