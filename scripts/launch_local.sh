#!/usr/bin/env bash
# Starts NPROC ranks of PROGRAM on this host with torchrun's variables, the
# way torchrun does on each node of a job:
#
#   scripts/launch_local.sh NPROC PROGRAM [ARGS...]                 one node (loopback)
#   scripts/launch_local.sh --nnodes N --node-rank K --master-addr HOST [--master-port P]
#                           [--run-id ID] NPROC PROGRAM [ARGS...]  node K of N (run it on every node)
#
# Each rank gets RANK (K * NPROC + local), WORLD_SIZE (N * NPROC), LOCAL_RANK,
# LOCAL_WORLD_SIZE, GROUP_RANK and NODE_RANK (K), GROUP_WORLD_SIZE (N),
# ROLE_RANK, ROLE_WORLD_SIZE, MASTER_ADDR, MASTER_PORT (one node: random, or
# $MASTER_PORT; several: --master-port or $MASTER_PORT, else 29500) and, with
# --run-id, TORCHELASTIC_RUN_ID. SIGTERM, SIGINT and SIGUSR1 are forwarded to
# every rank of this node. When a rank fails, the others of this node are
# stopped (SIGTERM, then SIGKILL after $AUTOSNAP_LAUNCH_GRACE seconds, 10 by
# default); the exit status is the first failing rank's, 0 when all succeed.
# (Ranks on other nodes learn of it through the job itself: autosnap's
# lifeline names a lost rank within distributed.timeout_seconds.)
set -uo pipefail
usage() {
  sed -n '6,7p' "$0" | sed 's/^#   /usage: /' >&2
  exit 2
}
nnodes=1 node_rank=0 master_addr=127.0.0.1 port=${MASTER_PORT:-} run_id=""
while [ $# -gt 0 ]; do
  case $1 in
    --nnodes) nnodes=${2:-}; shift 2 ;;
    --node-rank) node_rank=${2:-}; shift 2 ;;
    --master-addr) master_addr=${2:-}; shift 2 ;;
    --master-port) port=${2:-}; shift 2 ;;
    --run-id) run_id=${2:-}; shift 2 ;;
    --) shift; break ;;
    -*) echo "launch_local: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
if [ $# -lt 2 ] || ! [[ $1 =~ ^[1-9][0-9]*$ ]] || ! [[ $nnodes =~ ^[1-9][0-9]*$ ]] ||
   ! [[ $node_rank =~ ^[0-9]+$ ]] || ((node_rank >= nnodes)); then
  usage
fi
n=$1
shift
if [ -z "$port" ]; then
  # One node: below Linux's ephemeral range (32768-60999), where Gloo's own sockets listen.
  # Several: every node must name the same port, so torchrun's default.
  if ((nnodes == 1)); then port=$((20000 + RANDOM % 12000)); else port=29500; fi
fi
grace=${AUTOSNAP_LAUNCH_GRACE:-10}
[ -n "$run_id" ] && export TORCHELASTIC_RUN_ID=$run_id

declare -A rank_of=()
pids=()  # the ranks still running
for ((l = 0; l < n; l++)); do
  r=$((node_rank * n + l))
  RANK=$r WORLD_SIZE=$((nnodes * n)) LOCAL_RANK=$l LOCAL_WORLD_SIZE=$n GROUP_RANK=$node_rank NODE_RANK=$node_rank \
    GROUP_WORLD_SIZE=$nnodes ROLE_RANK=$r ROLE_WORLD_SIZE=$((nnodes * n)) MASTER_ADDR=$master_addr MASTER_PORT=$port \
    "$@" &
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
