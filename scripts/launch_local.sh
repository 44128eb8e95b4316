#!/usr/bin/env bash
# Starts NPROC ranks of PROGRAM on this host with torchrun's variables, the
# way torchrun does on each node of a job:
#
#   scripts/launch_local.sh [--max-restarts R] NPROC PROGRAM [ARGS...]           one node (loopback)
#   scripts/launch_local.sh --nnodes N --node-rank K --master-addr HOST [--master-port P]
#                           [--run-id ID] [--max-restarts R] NPROC PROGRAM [ARGS...]  node K of N
#
# Each rank gets RANK (K * NPROC + local), WORLD_SIZE (N * NPROC), LOCAL_RANK,
# LOCAL_WORLD_SIZE, GROUP_RANK and NODE_RANK (K), GROUP_WORLD_SIZE (N),
# ROLE_RANK, ROLE_WORLD_SIZE, MASTER_ADDR, MASTER_PORT (one node: random, or
# $MASTER_PORT; several: --master-port or $MASTER_PORT, else 29500),
# TORCHELASTIC_RESTART_COUNT (0 at the first start, 1 after the first
# restart, ...), TORCHELASTIC_MAX_RESTARTS (R) and, with --run-id,
# TORCHELASTIC_RUN_ID. Several nodes: run it on every node, each with its K.
#
# SIGTERM, SIGINT and SIGUSR1 are forwarded to every rank of this node. When a
# rank fails (a non-zero status, or killed by a signal), the others of this
# node are stopped (SIGTERM, then SIGKILL after $AUTOSNAP_LAUNCH_GRACE seconds,
# 10 by default); then, as with torchrun's --max-restarts, all NPROC ranks
# start again, at most R times (0 by default: no restart). The exit status is
# the first failing rank's of the last start, 0 when all succeed. A SIGTERM or
# SIGINT to the launcher stops the job: it is forwarded, and no restart
# follows. (Ranks on other nodes learn of a failure through the job itself:
# autosnap's lifeline names a lost rank within distributed.timeout_seconds,
# they fail, and their own launchers restart them; give every node the same R.)
set -uo pipefail
usage() {
  echo "usage:" >&2
  sed -n '/^#   scripts\/launch_local.sh/,/^#$/{/^#$/d;s/^#/ /;p}' "$0" >&2
  exit 2
}
nnodes=1 node_rank=0 master_addr=127.0.0.1 port=${MASTER_PORT:-} run_id="" max_restarts=0
while [ $# -gt 0 ]; do
  case $1 in
    --nnodes) nnodes=${2:-}; shift 2 ;;
    --node-rank) node_rank=${2:-}; shift 2 ;;
    --master-addr) master_addr=${2:-}; shift 2 ;;
    --master-port) port=${2:-}; shift 2 ;;
    --run-id) run_id=${2:-}; shift 2 ;;
    --max-restarts) max_restarts=${2:-}; shift 2 ;;
    --) shift; break ;;
    -*) echo "launch_local: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
if [ $# -lt 2 ] || ! [[ $1 =~ ^[1-9][0-9]*$ ]] || ! [[ $nnodes =~ ^[1-9][0-9]*$ ]] ||
   ! [[ $node_rank =~ ^[0-9]+$ ]] || ((node_rank >= nnodes)) || ! [[ $max_restarts =~ ^[0-9]+$ ]]; then
  usage
fi
n=$1
shift
program=("$@")
# One node: below Linux's ephemeral range (32768-60999), where Gloo's own sockets listen.
random_port() { echo $((20000 + RANDOM % 12000)); }
fixed_port=$port
if [ -z "$port" ]; then
  # Several nodes: every node must name the same port, so torchrun's default.
  if ((nnodes == 1)); then port=$(random_port); else port=29500; fi
fi
grace=${AUTOSNAP_LAUNCH_GRACE:-10}
[ -n "$run_id" ] && export TORCHELASTIC_RUN_ID=$run_id

declare -A rank_of=()
pids=()          # the ranks of this start still running
stop_signal=""   # SIGTERM or SIGINT to the launcher: the user stops the job, no restart
forward() { ((${#pids[@]} > 0)) && kill -s "$1" "${pids[@]}" 2>/dev/null; }
trap 'stop_signal=TERM; forward TERM' TERM
trap 'stop_signal=INT; forward INT' INT
trap 'forward USR1' USR1

# "137 (killed by SIGKILL)": bash reports a rank killed by signal S as 128 + S.
describe_status() {
  local rc=$1 name
  if ((rc > 128 && rc <= 128 + 64)) && name=$(kill -l $((rc - 128)) 2>/dev/null); then
    echo "$rc (killed by SIG$name)"
  else
    echo "$rc"
  fi
}

# Starts the NPROC ranks of this node (restart number $1), waits for all of
# them to end; status: the first failing rank's (failed_rank names it), 0 when
# all succeed.
run_ranks() {
  local restart=$1 l r pid rc timer="" remaining
  rank_of=()
  pids=()
  status=0 failed_rank=""
  for ((l = 0; l < n; l++)); do
    [ -n "$stop_signal" ] && break  # stopped between two starts
    r=$((node_rank * n + l))
    RANK=$r WORLD_SIZE=$((nnodes * n)) LOCAL_RANK=$l LOCAL_WORLD_SIZE=$n GROUP_RANK=$node_rank NODE_RANK=$node_rank \
      GROUP_WORLD_SIZE=$nnodes ROLE_RANK=$r ROLE_WORLD_SIZE=$((nnodes * n)) MASTER_ADDR=$master_addr MASTER_PORT=$port \
      TORCHELASTIC_RESTART_COUNT=$restart TORCHELASTIC_MAX_RESTARTS=$max_restarts \
      "${program[@]}" &
    pids+=($!)
    rank_of[$!]=$r
  done
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
        status=$rc failed_rank=${rank_of[$pid]}
        echo "launch_local: rank $failed_rank (pid $pid) exited with status $rc; stopping the other ranks" >&2
      fi
    done
    pids=("${remaining[@]}")
    if ((status != 0 && ${#pids[@]} > 0)) && [ -z "$timer" ]; then
      forward TERM
      # The SIGKILL after the grace period, cancelled (with its sleep) once every rank has ended,
      # so that it never reaches a process of the next start that reuses a pid.
      (
        s=""
        trap '[ -n "$s" ] && kill "$s" 2>/dev/null; exit 0' TERM
        sleep "$grace" &
        s=$!
        wait "$s"
        kill -s KILL "${pids[@]}" 2>/dev/null
      ) &
      timer=$!
    fi
  done
  if [ -n "$timer" ]; then
    kill "$timer" 2>/dev/null
    wait "$timer" 2>/dev/null
  fi
}

restarts=0
while true; do
  run_ranks "$restarts"
  if ((status == 0)) || [ -n "$stop_signal" ]; then break; fi
  if ((restarts >= max_restarts)); then
    ((max_restarts > 0)) &&
      echo "launch_local: rank $failed_rank exited with status $(describe_status "$status"); no restart left" \
        "($max_restarts made): exiting with status $status" >&2
    break
  fi
  restarts=$((restarts + 1))
  echo "launch_local: rank $failed_rank exited with status $(describe_status "$status"); restarting all $n ranks" \
    "(restart $restarts of $max_restarts)" >&2
  # One node, port not fixed: a new random port for each start. The program's own store
  # (train_ddp's TCPStore, torch's env:// rendezvous) listens at MASTER_PORT, and the failed
  # start may leave it held for a while (a process a rank left behind, which the launcher does not
  # signal; a socket in TIME_WAIT where SO_REUSEADDR is not set). A fixed port (--master-port,
  # $MASTER_PORT, several nodes, which must all name the same one) stays, as with torchrun: for
  # autosnap that is safe, since its coordinator does not listen at MASTER_PORT but at a port the
  # kernel picks, which rank 0 publishes in DIR/coordinator.json with the launch's identity (which
  # holds MASTER_PORT and TORCHELASTIC_RESTART_COUNT) and a nonce: ranks of a restart never take the
  # file or the store of the start before.
  if [ -z "$fixed_port" ] && ((nnodes == 1)); then
    previous=$port
    while [ "$port" = "$previous" ]; do port=$(random_port); done
  fi
done
exit "$status"
