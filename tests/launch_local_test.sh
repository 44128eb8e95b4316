#!/usr/bin/env bash
# scripts/launch_local.sh with real processes (no build needed): a small bash
# program as each rank records "RANK TORCHELASTIC_RESTART_COUNT
# TORCHELASTIC_MAX_RESTARTS MASTER_PORT WORLD_SIZE LOCAL_RANK" and fails as
# told. Checks --max-restarts (torchrun's): a rank that fails once (exit status
# or SIGKILL) makes every rank of the node start again with the next restart
# count; 0 restarts keeps the old behaviour; restarts run out with the failing
# status; a SIGTERM to the launcher is forwarded and starts nothing again; the
# port is new for each start on one node unless fixed; the several-node form.
#
#   tests/launch_local_test.sh [LAUNCHER]     (ctest: LauncherRestarts)
set -uo pipefail
launcher=${1:-$(cd "$(dirname "$0")/.." && pwd)/scripts/launch_local.sh}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export AUTOSNAP_LAUNCH_GRACE=3
failures=0
fail() { echo "FAIL: $tc: $*" >&2; failures=$((failures + 1)); }
check_eq() { [ "$2" = "$3" ] || fail "$1: expected '$3', got '$2'"; }

# The rank program. $MODE: once-exit (rank $VICTIM exits 3 at its first start), once-kill (it
# SIGKILLs itself at its first start), once-stubborn (once-exit, and the other ranks ignore
# SIGTERM at the first start), always (it exits 5 at every start), ok (every rank exits 0), hang
# (every rank waits). The other ranks of a start that fails wait to be stopped.
cat >"$work/rank.sh" <<'EOF'
#!/usr/bin/env bash
echo "$RANK $TORCHELASTIC_RESTART_COUNT $TORCHELASTIC_MAX_RESTARTS $MASTER_PORT $WORLD_SIZE $LOCAL_RANK" >>"$LOG"
victim=${VICTIM:-1}
# The victim fails once every rank of its start has logged (a loaded machine starts them slowly).
all_started() {
  for ((i = 0; i < 400; i++)); do
    (($(awk -v c="$TORCHELASTIC_RESTART_COUNT" '$2 == c' "$LOG" | wc -l) >= LOCAL_WORLD_SIZE)) && return
    sleep 0.05
  done
}
case $MODE in
  ok) exit 0 ;;
  hang) exec sleep 60 ;;
  always) [ "$RANK" = "$victim" ] && { all_started; exit 5; } ;;
  once-exit) [ "$TORCHELASTIC_RESTART_COUNT" = 0 ] && [ "$RANK" = "$victim" ] && { all_started; exit 3; } ;;
  once-kill) [ "$TORCHELASTIC_RESTART_COUNT" = 0 ] && [ "$RANK" = "$victim" ] && { all_started; kill -KILL $$; } ;;
  once-stubborn) [ "$TORCHELASTIC_RESTART_COUNT" = 0 ] && [ "$RANK" = "$victim" ] && { all_started; exit 3; }
    [ "$TORCHELASTIC_RESTART_COUNT" = 0 ] && trap '' TERM ;;  # deaf to SIGTERM: the SIGKILL after the grace ends it
esac
[ "$MODE" = always ] || [ "$TORCHELASTIC_RESTART_COUNT" = 0 ] || exit 0
exec sleep 60  # until the launcher stops it
EOF
chmod +x "$work/rank.sh"

# run CASE MODE [LAUNCHER ARGS...]: runs the launcher; sets rc, err (its stderr), starts (the log).
run() {
  tc=$1
  export MODE=$2 LOG=$work/$1.log
  shift 2
  : >"$LOG"
  local begin=$SECONDS
  timeout 30 "$launcher" "$@" "$work/rank.sh" 2>"$work/$tc.err"
  rc=$?
  err=$(cat "$work/$tc.err")
  starts=$(sort -n -k2 -k1 "$LOG")
  echo "$tc: status $rc, $(wc -l <"$LOG") rank starts, $((SECONDS - begin)) s" >&2
}
# The "RANK RESTART_COUNT" pairs of the log, one line each, sorted.
pairs() { awk '{print $1, $2}' <<<"$starts" | sort -n -k2 -k1 | tr '\n' ',' | sed 's/,$//'; }
count() { grep -c -- "$1" <<<"$err"; }

run once-exit-restarts once-exit --max-restarts 2 2
check_eq status "$rc" 0
check_eq "rank starts" "$(pairs)" "0 0,1 0,0 1,1 1"
check_eq "TORCHELASTIC_MAX_RESTARTS" "$(awk '{print $3}' <<<"$starts" | sort -u)" 2
check_eq "restart lines" "$(count 'restarting all')" 1
grep -q '^launch_local: rank 1 exited with status 3; restarting all 2 ranks (restart 1 of 2)$' <<<"$err" ||
  fail "no restart line for rank 1's status 3: $err"
[ "$(awk '$2 == 0 {print $4}' <<<"$starts" | sort -u)" != "$(awk '$2 == 1 {print $4}' <<<"$starts" | sort -u)" ] ||
  fail "one node, port not fixed: the restart kept MASTER_PORT: $starts"
check_eq "ports of one start" "$(awk '{print $2, $4}' <<<"$starts" | sort -u | wc -l)" 2

run once-kill-restarts once-kill --max-restarts 1 3
check_eq status "$rc" 0
check_eq "rank starts" "$(pairs)" "0 0,1 0,2 0,0 1,1 1,2 1"
grep -q '^launch_local: rank 1 exited with status 137 (killed by SIGKILL); restarting all 3 ranks (restart 1 of 1)$' \
  <<<"$err" || fail "no restart line naming SIGKILL: $err"

# The others ignore SIGTERM: SIGKILLed after the grace, then the restart.
AUTOSNAP_LAUNCH_GRACE=1 run stubborn-ranks-killed once-stubborn --max-restarts 1 2
check_eq status "$rc" 0
check_eq "rank starts" "$(pairs)" "0 0,1 0,0 1,1 1"

run no-restarts once-exit 2
check_eq status "$rc" 3
check_eq "rank starts" "$(pairs)" "0 0,1 0"
check_eq "TORCHELASTIC_MAX_RESTARTS" "$(awk '{print $3}' <<<"$starts" | sort -u)" 0
check_eq "stderr" "${err//(pid [0-9]*)/(pid P)}" \
  "launch_local: rank 1 (pid P) exited with status 3; stopping the other ranks"

run restarts-run-out always --max-restarts 2 2
check_eq status "$rc" 5
check_eq "rank starts" "$(pairs)" "0 0,1 0,0 1,1 1,0 2,1 2"
check_eq "restart lines" "$(count 'restarting all 2 ranks (restart [12] of 2)')" 2
grep -q '^launch_local: rank 1 exited with status 5; no restart left (2 made): exiting with status 5$' <<<"$err" ||
  fail "no last line: $err"

run all-succeed ok --max-restarts 2 2
check_eq status "$rc" 0
check_eq "rank starts" "$(pairs)" "0 0,1 0"
check_eq stderr "$err" ""

# A fixed port stays across restarts ($MASTER_PORT, or --master-port).
MASTER_PORT=23456 run fixed-port once-exit --max-restarts 1 2
check_eq status "$rc" 0
check_eq ports "$(awk '{print $4}' <<<"$starts" | sort -u)" 23456
run fixed-port-option once-exit --master-port 23457 --max-restarts 1 2
check_eq ports "$(awk '{print $4}' <<<"$starts" | sort -u)" 23457

# Node 1 of 2, 2 ranks each: ranks 2 and 3 start again; the port (every node's) stays.
VICTIM=3 run node-1-of-2 once-exit --nnodes 2 --node-rank 1 --master-addr 127.0.0.1 --max-restarts 1 2
check_eq status "$rc" 0
check_eq "rank starts" "$(pairs)" "2 0,3 0,2 1,3 1"
check_eq "ports, world sizes, local ranks" "$(awk '{print $4, $5, $6}' <<<"$starts" | sort -u | tr '\n' ,)" \
  "29500 4 0,29500 4 1,"
grep -q 'rank 3 exited with status 3; restarting all 2 ranks (restart 1 of 1)' <<<"$err" || fail "$err"

# SIGTERM to the launcher: forwarded to every rank (they end with 143), and no restart.
tc=sigterm-stops
export MODE=hang LOG=$work/$tc.log
: >"$LOG"
AUTOSNAP_LAUNCH_GRACE=30 "$launcher" --max-restarts 3 2 "$work/rank.sh" 2>"$work/$tc.err" &
job=$!
for ((i = 0; i < 400 && $(wc -l <"$LOG") < 2; i++)); do sleep 0.05; done
begin=$SECONDS
kill -TERM "$job"
wait "$job"
rc=$?
sleep 0.3  # time for a wrong restart to show in the log
starts=$(sort -n -k2 -k1 "$LOG") err=$(cat "$work/$tc.err")
echo "$tc: status $rc, $(wc -l <"$LOG") rank starts, $((SECONDS - begin)) s" >&2
check_eq status "$rc" 143
check_eq "rank starts" "$(pairs)" "0 0,1 0"
check_eq "restart lines" "$(count 'restarting')" 0
((SECONDS - begin < 20)) || fail "the ranks were not stopped by the forwarded SIGTERM (but by the SIGKILL after 30 s)"

# Usage: a malformed --max-restarts is refused; the usage names both forms.
tc=usage
"$launcher" --max-restarts -1 2 true 2>"$work/usage.err"
check_eq status $? 2
if ! grep -q 'usage:' "$work/usage.err" || ! grep -q 'launch_local.sh \[--max-restarts R\] NPROC PROGRAM' "$work/usage.err" ||
   ! grep -q -- '--nnodes N --node-rank K' "$work/usage.err"; then
  fail "$(cat "$work/usage.err")"
fi

if ((failures > 0)); then
  echo "launch_local_test: $failures check(s) failed" >&2
  exit 1
fi
echo "launch_local_test: OK"
