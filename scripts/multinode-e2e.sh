#!/usr/bin/env bash
# Cluster jobs on several nodes, for real, on this one host: scripts/cluster/
# nodes.sh makes node1..node3 out of namespaces (each its own network on a
# bridge, host name, /tmp and /dev/shm; one shared directory plays the shared
# file system), scripts/cluster/slurm.sh runs one slurmd per node. Then
# train_ddp runs across the nodes through each failure a real cluster has,
# and every case that resumes is compared bitwise with an uninterrupted run.
# Prints one line per case; exits non-zero on the first case that fails.
# Tears down only what it started. Needs root (namespaces, a bridge, Slurm's
# daemons); without root it says so and fails.
#
#   scripts/multinode-e2e.sh [BUILD_DIR]      (default: build)
#
# Cases: a two-node run killed and resumed; node2 crashed with 2 ranks per
# node; node2's link cut; a rank stopped past the timeout; a slow and lossy
# link (and the per-step cost of autosnap's agreement); two jobs at adjacent
# MASTER_PORTs; a node-local snapshot directory; Slurm preemption and requeue
# onto another node set; Slurm node failure and requeue; node2 lost with its
# memory, its ranks resumed from the memory tier's replicas on node1.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
build=$(realpath "${1:-build}")
say() { echo "multinode-e2e: $*"; }
die() { echo "multinode-e2e: FAILED: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (network, UTS, mount and PID namespaces, a bridge, Slurm's daemons); not run"
[ -x "$build/examples/train_ddp" ] || die "$build/examples/train_ddp is not built"

scripts/setup.sh iproute2 nftables iputils-ping slurmctld slurmd slurm-client munge

export MN_DIR=/tmp/autosnap-nodes MN_SHARED=/tmp/autosnap-shared
nodes=$repo/scripts/cluster/nodes.sh
slurm=$repo/scripts/cluster/slurm.sh
ip link show asn-br0 >/dev/null 2>&1 && die "the nodes are up already (another run?); scripts/cluster/nodes.sh down"
T=6  # distributed.timeout_seconds of every job here
work=$MN_SHARED/e2e
logs=${AUTOSNAP_E2E_LOGS:-$build/multinode-e2e-logs}  # every case's logs are kept here
cleanup() {
  rm -rf "$logs" && mkdir -p "$logs"
  (cd "$work" 2>/dev/null && find . \( -name '*.log' -o -name '*.out' \) -exec cp --parents {} "$logs" \;) || true
  [ -n "${SLURM_CONF:-}" ] && "$slurm" stop >/dev/null 2>&1 || true
  "$nodes" down >/dev/null 2>&1 || true
  rm -rf "$MN_DIR" "$MN_SHARED"
}
trap cleanup EXIT
unset AUTOSNAP_CONFIG SLURM_JOB_ID SLURM_NTASKS SLURM_PROCID MASTER_ADDR MASTER_PORT RANK WORLD_SIZE GLOO_SOCKET_IFNAME
elapsed() { awk -v now="$(date +%s.%N)" -v then="$1" 'BEGIN { printf "%.1f", now - then }'; }
below() { awk -v x="$1" -v limit="$2" 'BEGIN { exit !(x < limit) }'; }
start=$(date +%s.%N)
"$nodes" up 3
say "nodes up in $(elapsed "$start") s: bridge $(ip -br addr show asn-br0 | awk '{print $3}'), node1..node3"

# The binaries where every node sees them (the host's /tmp is private to each node).
mkdir -p "$work/bin"
cp "$build/examples/train_ddp" "$build/plugin/autosnap" "$repo/scripts/launch_local.sh" "$work/bin/"
cp -P "$build"/plugin/libautosnap.so* "$work/bin/"
export LD_LIBRARY_PATH=$work/bin
cli=$work/bin/autosnap

wait_for() {  # FILE PATTERN SECONDS
  local i
  for i in $(seq $(($3 * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
config() {  # NAME [TRIGGERS] -> a config whose snapshots go to $work/NAME/snaps
  mkdir -p "$work/$1"
  printf 'directory: %s\ntriggers: {%s}\nretention: {keep_last: 0}\ncontrol: {socket: false}\nlog_level: info\ndistributed: {timeout_seconds: %s}\n' \
    "$work/$1/snaps" "${2:-every_steps: 20}" "$T" > "$work/$1/autosnap.yaml"
  echo "$work/$1/autosnap.yaml"
}

# start_job NAME NNODES NPROC PORT ARGS...: the job on node1..nodeNNODES, torchrun-style, in the
# background; JOB_PIDS are the launchers (host pids), logs in $work/NAME/nodeK.log.
start_job() {
  local name=$1 nn=$2 np=$3 port=$4 k
  shift 4
  mkdir -p "$work/$name"
  JOB_PIDS=()
  for k in $(seq 0 $((nn - 1))); do
    # In a subshell: a node's crash kills the command, not a job of this shell (no "Killed" noise).
    ("$nodes" exec "node$((k + 1))" "$work/bin/launch_local.sh" --nnodes "$nn" --node-rank "$k" --master-addr node1 \
      --master-port "$port" "$np" "$work/bin/train_ddp" --hidden 256 --log-every 1 "$@" \
      > "$work/$name/node$((k + 1)).log" 2>&1; exit $?) 2>/dev/null &
    JOB_PIDS+=($!)
  done
}
# wait_job: JOB_STATUS[k] = node k+1's launcher's exit status.
wait_job() {
  local pid
  JOB_STATUS=()
  for pid in "${JOB_PIDS[@]}"; do
    if wait "$pid" 2>/dev/null; then JOB_STATUS+=(0); else JOB_STATUS+=($?); fi
  done
}
run_job() { start_job "$@"; wait_job; }
show() { sed 's/^/  | /' "$work/$1"/node*.log | grep -v ' loss \|committed step' | tail -${2:-25}; }
expect_ok() {  # NAME
  local s
  for s in "${JOB_STATUS[@]}"; do [ "$s" = 0 ] || { show "$1"; die "$1: a launcher exited with status $s"; }; done
}
# Every committed snapshot verifies and holds a shard of each of WORLD ranks.
expect_complete() {  # DIR WORLD
  "$cli" verify "$1" --all >/dev/null || { "$cli" verify "$1" --all; die "$1: a committed snapshot does not verify"; }
  "$cli" list "$1" --json | /usr/bin/python3 -c "
import json, sys
bad = [s for s in json.load(sys.stdin) if s['status'] == 'valid' and s['world_size'] != $2]
sys.exit(1 if bad else 0)" || die "$1: a committed snapshot lacks ranks"
}
same() {  # REFERENCE RESULT CASE
  cmp -s "$1" "$2" || die "$3: the result differs from the uninterrupted run's"
}
kill_job() {  # every process of the job, on every node
  local k
  for k in 1 2 3; do
    "$nodes" exec "node$k" pkill -9 -f "$work/bin/launch_local.sh" 2>/dev/null || true
    "$nodes" exec "node$k" pkill -9 -f "$work/bin/train_ddp" 2>/dev/null || true
  done
}
steps=300
slow="--sleep-ms 15"

# ---- references: the same training, uninterrupted, no snapshots ----
run_job ref2 2 1 29400 --steps $steps --out "$work/ref2/out.pt"
expect_ok ref2
run_job ref4 2 2 29402 --steps $steps --out "$work/ref4/out.pt"
expect_ok ref4
grep -q "rank 1 of 2" "$work/ref2/node2.log" || die "ref2: rank 1 did not run on node2"

# ---- 1. two nodes, killed mid-run, relaunched ----
case_1() {
  c=$(config kill)
  start_job kill 2 1 29410 --steps $steps --config "$c" $slow
  wait_for "$work/kill/node1.log" "step    120" 60 || { show kill; die "kill: training did not get to step 120"; }
  kill_job
  wait_job
  run_job kill-resumed 2 1 29410 --steps $steps --config "$c" --out "$work/kill/out.pt"
  expect_ok kill-resumed
  grep -q "rank 1 of 2: resumed from step" "$work/kill-resumed/node2.log" || die "kill: rank 1 did not resume"
  expect_complete "$work/kill/snaps" 2
  same "$work/ref2/out.pt" "$work/kill/out.pt" kill
  say "OK  two-node run: killed at step ~120 ($(grep -o 'resumed from step [0-9]*' "$work/kill-resumed/node1.log" | head -1)), relaunched, bitwise equal; Gloo across the bridge: $(grep -o 'Gloo on [0-9.]* ([^)]*)' "$work/kill-resumed/node2.log" | head -1)"
}

# ---- 2. node2 crashes (2 ranks per node) ----
case_2() {
  c=$(config crash "every_steps: 10")
  start_job crash 2 2 29420 --steps $steps --config "$c" $slow
  wait_for "$work/crash/node1.log" "step    100" 60 || { show crash; die "crash: training did not get to step 100"; }
  t0=$(date +%s.%N)
  "$nodes" crash node2
  wait "${JOB_PIDS[0]}" 2>/dev/null && die "crash: node1's ranks exited 0 after node2 crashed" || status=$?
  took=$(elapsed "$t0")
  wait "${JOB_PIDS[1]}" 2>/dev/null || true
  below "$took" "$T" || die "crash: node1's ranks took ${took} s to stop (timeout $T s)"
  grep -q "ranks 2 and 3 on node2 are lost" "$work/crash/node1.log" || { show crash; die "crash: no error names ranks 2 and 3 on node2"; }
  expect_complete "$work/crash/snaps" 4
  "$nodes" start node2
  run_job crash-resumed 2 2 29420 --steps $steps --config "$c" --out "$work/crash/out.pt"
  expect_ok crash-resumed
  same "$work/ref4/out.pt" "$work/crash/out.pt" crash
  say "OK  node2 crashed (2 ranks per node): node1 stopped in $took s (status $status), \"$(grep -o 'ranks 2 and 3 on node2 are lost: [^(;]*' "$work/crash/node1.log" | head -1)\"; nothing half-committed; relaunched, bitwise equal"
}

# ---- 3. node2's link cut: no FIN, no RST ----
case_3() {
  c=$(config cut)
  start_job cut 2 1 29430 --steps $steps --config "$c" $slow
  wait_for "$work/cut/node1.log" "step    100" 60 || { show cut; die "cut: training did not get to step 100"; }
  t0=$(date +%s.%N)
  "$nodes" link node2 down
  wait "${JOB_PIDS[0]}" 2>/dev/null && die "cut: rank 0 exited 0 with its peer cut off" || status=$?
  took=$(elapsed "$t0")
  wait "${JOB_PIDS[1]}" 2>/dev/null && die "cut: rank 1 exited 0 while cut off" || status1=$?
  took1=$(elapsed "$t0")
  "$nodes" link node2 up
  below "$took" $((T + 4)) || die "cut: rank 0 took ${took} s to stop (timeout $T s)"
  grep -q "rank 1 on node2 is lost: nothing heard" "$work/cut/node1.log" || { show cut; die "cut: rank 0 did not name rank 1 on node2"; }
  grep -q "rank 0 on node1 is lost" "$work/cut/node2.log" || { show cut; die "cut: rank 1 did not name rank 0 on node1"; }
  expect_complete "$work/cut/snaps" 2
  run_job cut-resumed 2 1 29430 --steps $steps --config "$c" --out "$work/cut/out.pt"
  expect_ok cut-resumed
  same "$work/ref2/out.pt" "$work/cut/out.pt" cut
  say "OK  node2's link cut: rank 0 stopped in $took s (status $status), rank 1 in $took1 s (status $status1), each naming the other and its node; relaunched, bitwise equal"
}

# ---- 4. a rank stopped longer than the timeout, then continued ----
case_4() {
  c=$(config stall "every_steps: 10")
  start_job stall 2 1 29440 --steps $steps --config "$c" $slow --out "$work/stall/out.pt"
  wait_for "$work/stall/node1.log" "step    100" 60 || { show stall; die "stall: training did not get to step 100"; }
  "$nodes" exec node2 pkill -STOP -x train_ddp
  sleep $((T + 3))
  "$nodes" exec node2 pkill -CONT -x train_ddp
  wait_job
  newest=$("$cli" latest "$work/stall/snaps" --fast || echo none)
  if [ "${JOB_STATUS[0]}" = 0 ]; then
    [ "$newest" = $((steps - 1)) ] || die "stall: the job finished but its newest snapshot is step $newest: it stopped protecting itself"
    outcome="the job went on and snapshotted to the end (step $newest)"
  else
    grep -q "rank 1 on node2 is lost" "$work/stall/node1.log" || { show stall; die "stall: stopped without naming rank 1"; }
    outcome="both ranks stopped (status ${JOB_STATUS[*]}) with \"$(grep -o 'rank 1 on node2 is lost: [^(;]*' "$work/stall/node1.log" | head -1)\", newest snapshot step $newest"
  fi
  expect_complete "$work/stall/snaps" 2
  say "OK  rank 1 stopped for $((T + 3)) s (timeout $T s): $outcome"
}

# ---- 5. a slow and lossy link ----
case_5() {
  "$nodes" shape node2 4mbit
  "$nodes" drop node2 10
  c=$(config lossy "every_steps: 25")
  run_job lossy 2 1 29450 --steps 100 --config "$c" --out "$work/lossy/out.pt"
  expect_ok lossy
  expect_complete "$work/lossy/snaps" 2
  committed=$("$cli" list "$work/lossy/snaps" --json | /usr/bin/python3 -c "import json,sys; print(len([s for s in json.load(sys.stdin) if s['status']=='valid']))")
  [ "$committed" = 5 ] || die "lossy: $committed snapshots committed, expected 5 (every 25 steps and the end)"
  # What the per-step agreement costs: the same steps with autosnap (no snapshot taken) and without.
  ms() { grep -o '[0-9.]* ms per step' "$work/$1/node1.log" | awk '{print $1}'; }
  measure() {  # NAME-PREFIX STEPS: ms/step without and with autosnap, interleaved twice
    local r
    for r in 1 2; do
      run_job "$1-off-$r" 2 1 29460 --steps "$2"
      run_job "$1-on-$r" 2 1 29462 --steps "$2" --config "$(config "$1-on-$r" 'every_steps: 1000000, on_train_end: false')"
    done
    echo "$(ms "$1-off-1") $(ms "$1-off-2") $(ms "$1-on-1") $(ms "$1-on-2")" |
      awk '{off=($1<$2?$1:$2); on=($3<$4?$3:$4); printf "%.2f ms/step without autosnap, %.2f with (+%.2f ms)", off, on, on-off}'
  }
  bad=$(measure lossy-cost 50)
  "$nodes" heal node2
  good=$(measure clean-cost 300)
  say "OK  link at 4 Mbit/s with 10 % of packets dropped: all 5 snapshots committed; per-step agreement: $bad on that link, $good on a clean one"
}

# ---- 6. two jobs at adjacent MASTER_PORTs ----
case_6() {
  ca=$(config adjacent-a) cb=$(config adjacent-b)
  start_job adjacent-a 2 1 29500 --steps $steps --config "$ca" --out "$work/adjacent-a/out.pt"
  pids_a=("${JOB_PIDS[@]}")
  run_job adjacent-b 2 1 29501 --steps $steps --config "$cb" --out "$work/adjacent-b/out.pt"
  expect_ok adjacent-b
  JOB_PIDS=("${pids_a[@]}")
  wait_job
  expect_ok adjacent-a
  same "$work/ref2/out.pt" "$work/adjacent-a/out.pt" adjacent-a
  same "$work/ref2/out.pt" "$work/adjacent-b/out.pt" adjacent-b
  say "OK  two jobs at MASTER_PORT 29500 and 29501 at once: both finished, both bitwise equal (stores at $(grep -o 'TCPStore at node1:[0-9]*' "$work/adjacent-a/node1.log" | head -1 | cut -d: -f2) and $(grep -o 'TCPStore at node1:[0-9]*' "$work/adjacent-b/node1.log" | head -1 | cut -d: -f2))"
}

# ---- 7. a snapshot directory that only one node sees ----
case_7() {
  # With the store's port published in the directory (the default), rank 1 cannot find it; with a
  # fixed distributed.port the group forms and the probe files show it. Both are errors at start.
  for variant in published fixed; do
    mkdir -p "$work/local-$variant"
    port_line=""
    [ $variant = fixed ] && port_line=", port: 29475"
    printf 'directory: /tmp/node-local-snaps\ntriggers: {every_steps: 20}\ncontrol: {socket: false}\ndistributed: {timeout_seconds: %s%s}\n' \
      "$T" "$port_line" > "$work/local-$variant/autosnap.yaml"
    run_job "local-$variant" 2 1 29470 --steps 50 --config "$work/local-$variant/autosnap.yaml"
    [ "${JOB_STATUS[0]}" != 0 ] && [ "${JOB_STATUS[1]}" != 0 ] || die "local: a job with a node-local directory ran"
    grep -q "file system shared by every node" "$work/local-$variant/node2.log" || { show "local-$variant"; die "local: no clear error"; }
  done
  say "OK  node-local snapshot directory: refused at start, e.g. \"$(grep -o 'rank 1 on node2: cannot see[^:]*' "$work/local-fixed/node1.log" | head -1)\""
}

# ---- 8. Slurm across the nodes: preempted, requeued onto another node set ----
# Slurm on the nodes (cases 8 and 9): slurmctld here, one slurmd per node.
slurm_up() {
  [ -n "${SLURM_CONF:-}" ] && return 0
  "$slurm" start >/dev/null
  export SLURM_CONF=$MN_DIR/slurm/slurm.conf
  mkdir -p "$work/slurm"
  printf '%s\n' "directory: $work/slurm/checkpoints/\${SLURM_JOB_ID}" "triggers: {every_steps: 20}" \
    "retention: {keep_last: 0}" "control: {socket: false}" \
    "signals: {snapshot: [], snapshot_and_stop: [SIGUSR1, SIGTERM], after_stop: requeue}" \
    "distributed: {timeout_seconds: $T}" "log_level: info" > "$work/slurm/autosnap.yaml"
}
submit() {  # NAME -> job id; 2 nodes, a rank on each
  AUTOSNAP_CONFIG=$work/slurm/autosnap.yaml TRAIN_DDP=$work/bin/train_ddp STEPS=$steps OUT=$work/slurm/out-$1.pt \
    TRAIN_ARGS="--hidden 256 --log-every 1 $slow" sbatch --parsable -N 2 --ntasks-per-node=1 --chdir="$work/slurm" \
    --output="$work/slurm/job-%j.out" "$repo/scripts/slurm/train.sbatch"
}
job_state() { scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2; }
job_nodes() { scontrol show job "$1" 2>/dev/null | grep -o ' NodeList=[^ ]*' | cut -d= -f2; }
wait_state() {  # JOB STATE SECONDS
  local i
  for i in $(seq $(($3 * 5))); do [ "$(job_state "$1")" = "$2" ] && return 0; sleep 0.2; done
  return 1
}

case_8() {
  slurm_up
  job=$(submit preempt)
  wait_for "$work/slurm/job-$job.out" "step     50" 90 || { cat "$work/slurm/job-$job.out"; die "slurm: the job did not train"; }
  drained=$(scontrol show hostnames "$(job_nodes "$job")" | head -1)
  scontrol update NodeName="$drained" State=DRAIN Reason=e2e  # the requeued run must go elsewhere
  scancel --signal=USR1 "$job"
  wait_state "$job" COMPLETED 180 || { cat "$work/slurm/job-$job.out"; die "slurm: the requeued job did not complete (state $(job_state "$job"))"; }
  grep -q "run 2," "$work/slurm/job-$job.out" || die "slurm: the job was not requeued"
  second_nodes=$(grep "run 2," "$work/slurm/job-$job.out" | sed -n 's/.* tasks \(on [^ ]*\), .*/\1/p' | head -1)
  grep -q "rank 0 of 2: resumed from step" "$work/slurm/job-$job.out" || die "slurm: the requeued run did not resume"
  grep -rq 'slurm_restart_count: "1"' "$work/slurm/checkpoints/$job"/step-*/manifest.yaml || die "slurm: SLURM_RESTART_COUNT not recorded"
  same "$work/ref2/out.pt" "$work/slurm/out-preempt.pt" slurm-preempt
  scontrol update NodeName="$drained" State=RESUME
  say "OK  Slurm: preempted $(grep 'run 1,' "$work/slurm/job-$job.out" | sed -n 's/.* tasks \(on [^ ]*\), .*/\1/p' | head -1), requeued and resumed $second_nodes (SLURM_RESTART_COUNT 1 recorded), bitwise equal"
}

# ---- 9. Slurm: a node of the job fails; Slurm requeues it elsewhere ----
case_9() {
  slurm_up
  job=$(submit nodefail)
  wait_for "$work/slurm/job-$job.out" "step     50" 90 || { cat "$work/slurm/job-$job.out"; die "slurm: the job did not train"; }
  victim=$(scontrol show hostnames "$(job_nodes "$job")" | tail -1)
  t0=$(date +%s.%N)
  "$nodes" crash "$victim"
  wait_for "$work/slurm/job-$job.out" "run 2," 120 || { cat "$work/slurm/job-$job.out"; die "slurm: not requeued after $victim failed"; }
  requeued=$(elapsed "$t0")
  wait_state "$job" COMPLETED 180 || { cat "$work/slurm/job-$job.out"; die "slurm: the job did not complete after the node failure"; }
  grep -q "rank 0 of 2: resumed from step" "$work/slurm/job-$job.out" || die "slurm: the run after the node failure did not resume"
  same "$work/ref2/out.pt" "$work/slurm/out-nodefail.pt" slurm-nodefail
  "$slurm" node-up "$victim"  # the cases after this one run on every node again
  say "OK  Slurm: $victim failed mid-run, the job was requeued after $requeued s and resumed $(grep 'run 2,' "$work/slurm/job-$job.out" | sed -n 's/.* tasks \(on [^ ]*\), .*/\1/p' | head -1), bitwise equal"
}

# ---- 10. node2 lost with its memory; its ranks resume from node1's replicas ----
case_10() {
  local node
  for node in node1 node2; do [ -n "$("$nodes" pid "$node" 2>/dev/null)" ] || die "replicas: $node is not running before the case starts"; done
  c=$(config replicas "every_steps: 50")
  echo "memory: {every_steps: 1, keep_last: 2, replicas: 1}" >> "$c"
  start_job replicas 2 2 29480 --steps $steps --config "$c" $slow
  wait_for "$work/replicas/node1.log" "step    130" 60 || { show replicas; die "replicas: training did not get to step 130"; }
  "$nodes" crash node2  # its processes and its /dev/shm are gone
  wait_job
  disk=$("$cli" latest "$work/replicas/snaps" --fast)
  logged=$(grep -o 'step *[0-9]*  loss' "$work/replicas/node1.log" | awk '{print $2}' | tail -1)
  # The newest step node1 holds for every rank: ranks 0 and 1's own memory snapshots and the
  # replicas of ranks 2 and 3 (how far the replicas lag the kill depends on the machine's load).
  held=$("$nodes" exec node1 sh -c "for d in /dev/shm/autosnap-*/*/rank-0000[01] /dev/shm/autosnap-*/*/rank-0000[01]/replicas/rank-*; do
      \"$cli\" list \"\$d\" --json | tr -d '\\n'; echo; done" | /usr/bin/python3 -c "
import json, sys
stores = [{s['step'] for s in json.loads(line) if s['status'] == 'valid'} for line in sys.stdin if line.strip()]
common = set.intersection(*stores) if len(stores) == 4 else set()
print(max(common) if common else 'none')")
  "$nodes" start node2
  run_job replicas-resumed 2 2 29480 --steps $steps --config "$c" --out "$work/replicas/out.pt"
  expect_ok replicas-resumed
  resumed=$(grep -o 'rank 0 of 4: resumed from step [0-9]*' "$work/replicas-resumed/node1.log" | awk '{print $NF}')
  [ -n "$resumed" ] && [ "$resumed" -gt "$disk" ] || { show replicas-resumed; die "replicas: resumed from step ${resumed:-none}, not newer than the disk's $disk"; }
  [ "$resumed" = "$held" ] || die "replicas: resumed at step $resumed, but node1 held step $held of every rank (node1 had logged step $logged)"
  for pair in "2 0" "3 1"; do
    set -- $pair
    grep -q "rank $1 on node2 lacked its memory snapshot of step $resumed: got it from the replica on rank $2 on node1" \
      "$work/replicas-resumed/node2.log" || { show replicas-resumed; die "replicas: rank $1 did not get its replica from rank $2"; }
  done
  expect_complete "$work/replicas/snaps" 4
  same "$work/ref4/out.pt" "$work/replicas/out.pt" replicas
  say "OK  node2 crashed with its memory at step $logged (2 ranks per node, memory.replicas: 1): ranks 2 and 3 resumed at step $resumed from node1's replicas (the disk had step $disk), bitwise equal"
}

# AUTOSNAP_E2E_CASES="2 3" runs only those cases (the references always run).
for n in 1 2 3 4 5 6 7 8 9 10; do
  [ -z "${AUTOSNAP_E2E_CASES:-}" ] || [[ " $AUTOSNAP_E2E_CASES " == *" $n "* ]] || continue
  case_start=$(date +%s.%N)
  "case_$n"
  say "    (case $n took $(elapsed "$case_start") s)"
done
say "all cases passed in $(elapsed "$start") s"
