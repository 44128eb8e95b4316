#!/usr/bin/env bash
# Starts N ranks of PROGRAM on this host with torchrun's variables (RANK,
# WORLD_SIZE, LOCAL_RANK, MASTER_ADDR=127.0.0.1, MASTER_PORT (random, or
# $MASTER_PORT); autosnap's own store takes MASTER_PORT + 1). SIGTERM, SIGINT and SIGUSR1 are forwarded to
# every rank. When a rank fails, the others are stopped (SIGTERM, then SIGKILL
# after $AUTOSNAP_LAUNCH_GRACE seconds, 10 by default); the exit status is the
# first failing rank's, 0 when all succeed.
#
#   scripts/launch_local.sh N PROGRAM [ARGS...]
set -uo pipefail
if [ $# -lt 2 ] || ! [[ $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/launch_local.sh N PROGRAM [ARGS...]" >&2
  exit 2
fi
n=$1
shift
# Below Linux's ephemeral range (32768-60999), where Gloo's own sockets listen.
port=${MASTER_PORT:-$((20000 + RANDOM % 12000))}
grace=${AUTOSNAP_LAUNCH_GRACE:-10}

declare -A rank_of=()
pids=()  # the ranks still running
for ((r = 0; r < n; r++)); do
  RANK=$r WORLD_SIZE=$n LOCAL_RANK=$r LOCAL_WORLD_SIZE=$n MASTER_ADDR=127.0.0.1 MASTER_PORT=$port "$@" &
  pids+=($!)
  rank_of[$!]=$r
done

forward() { kill -s "$1" "${pids[@]}" 2>/dev/null; }
trap 'forward TERM' TERM
trap 'forward INT' INT
trap 'forward USR1' USR1

status=0
while ((${#pids[@]} > 0)); do
  wait -n "${pids[@]}" 2>/dev/null  # returns when a rank ends, or when a forwarded signal arrives
  remaining=()
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null && ! grep -qs '^State:.*Z' "/proc/$pid/status"; then
      remaining+=("$pid")
      continue
    fi
    wait "$pid" 2>/dev/null
    rc=$?
    if ((rc != 0 && status == 0)); then
      status=$rc
      echo "launch_local: rank ${rank_of[$pid]} (pid $pid) exited with status $rc; stopping the other ranks" >&2
    fi
  done
  pids=("${remaining[@]}")
  if ((status != 0 && ${#pids[@]} > 0)) && [ -z "${stopping:-}" ]; then
    stopping=1
    forward TERM
    (sleep "$grace" && kill -s KILL "${pids[@]}" 2>/dev/null) &
  fi
done
exit "$status"
