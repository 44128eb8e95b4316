#!/usr/bin/env bash
# The main command: build the example, kill it mid-run with SIGKILL, start it
# again, and show that it resumed from its last snapshot and finished with
# bitwise the same model and optimizer as a run that was never interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
build_dir=${AUTOSNAP_BUILD_DIR:-build}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DAUTOSNAP_BUILD_EXAMPLES=ON >/dev/null
cmake --build "$build_dir" -j "$(nproc)" --target train_mlp >/dev/null
train="$build_dir/examples/train_mlp"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/autosnap.yaml" <<YAML
directory: $work/snapshots
triggers: {every_steps: 25, on_train_end: true}
retention: {keep_last: 3}
YAML
args=(--steps 400 --sleep-ms 10 --log-every 50 --seed 1)

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }

say "1. A reference run, never interrupted, no snapshots:"
AUTOSNAP_CONFIG= "$train" "${args[@]}" --out "$work/reference.pt" | sed 's/^/   /'

say "2. The same training with snapshots every 25 steps; we kill it with SIGKILL mid-run:"
"$train" "${args[@]}" --config "$work/autosnap.yaml" --out "$work/resumed.pt" > "$work/run1.log" 2>&1 &
pid=$!
# Kill it once a few snapshots are committed (at most 60 s), wherever it is then.
for _ in $(seq 600); do
  [ "$(grep -c 'committed step' "$work/run1.log" 2>/dev/null)" -ge 3 ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
sleep 0.$((RANDOM % 10))
kill -KILL "$pid"
wait "$pid" 2>/dev/null || true
sed 's/^/   /' "$work/run1.log"
echo "   *** killed (SIGKILL) ***"
echo "   The snapshot directory now holds:"
ls "$work/snapshots" | sed 's/^/     /'

say "3. The same command again: it finds the newest valid snapshot and continues:"
"$train" "${args[@]}" --config "$work/autosnap.yaml" --out "$work/resumed.pt" > "$work/run2.log" 2>&1
sed 's/^/   /' "$work/run2.log"
if ! grep -q "^resumed from step" "$work/run2.log"; then
  echo "   DID NOT RESUME: the second run started from scratch." >&2
  exit 1
fi

say "4. Compare the two final checkpoints (model, optimizer, step, loss):"
if cmp -s "$work/reference.pt" "$work/resumed.pt"; then
  echo "   bitwise identical: the interrupted run ended exactly where the uninterrupted one did."
else
  echo "   DIFFERENT: the resumed run does not match the reference." >&2
  exit 1
fi
/usr/bin/python3 - "$work/resumed.pt" <<'PY' | sed 's/^/   /'
import sys, torch
c = torch.load(sys.argv[1])
print(f"Python's torch.load reads it too: step {c['step']}, loss {c['loss']:.6f}, "
      f"{len(c['model_state_dict'])} model tensors, optimizer state for {len(c['optimizer_state_dict']['state'])} parameters")
PY
