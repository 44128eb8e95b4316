#!/usr/bin/env bash
# End to end on a real one-node Slurm: installs Slurm and munge (Debian),
# starts munged, slurmctld and slurmd with a fast-requeue slurm.conf for this
# host, submits scripts/slurm/train.sbatch with 2 tasks, preempts it with
# SIGUSR1 (scancel --signal), lets autosnap snapshot, stop and requeue it, and
# checks that the requeued run resumed (SLURM_RESTART_COUNT >= 1 recorded)
# and ended bitwise equal to an uninterrupted run. Stops only the daemons it
# started. Needs root (Slurm's daemons); exits non-zero, saying why, when it
# cannot run here.
#
#   scripts/slurm-e2e.sh [BUILD_DIR]      (default: build; must hold examples/train_ddp)
set -euo pipefail
cd "$(dirname "$0")/.."
build=$(realpath "${1:-build}")
if [ "$(id -u)" -ne 0 ]; then
  echo "slurm-e2e: needs root to run munged, slurmctld and slurmd; not run" >&2
  exit 1
fi
[ -x "$build/examples/train_ddp" ] || { echo "slurm-e2e: $build/examples/train_ddp is not built" >&2; exit 1; }

scripts/setup.sh slurmctld slurmd slurm-client munge

work=$(mktemp -d /tmp/autosnap-slurm.XXXXXX)
chmod 755 "$work"
started=()
cleanup() {
  for pidfile in "$work/run/slurmd.pid" "$work/run/slurmctld.pid"; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 1
  rm -rf "$work"
}
trap cleanup EXIT

# munge: a key if the package made none, and a munged of our own unless one runs.
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi
if ! munge -n >/dev/null 2>&1; then
  install -d -o munge -g munge /run/munge
  runuser -u munge -- munged
  for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
  # Ours is the newest munged (none answered before); stopped on exit like the others.
  munged_pid=$(pgrep -u munge -x -n munged || true)
  [ -n "$munged_pid" ] && started+=("$munged_pid")
fi

host=$(hostname -s)
mkdir -p "$work"/{state,spool,run,log,job}
sed -e "s#@DIR@#$work#g" -e "s#@HOST@#$host#g" scripts/slurm/slurm.conf.in > "$work/slurm.conf"
export SLURM_CONF=$work/slurm.conf
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 100); do
  sinfo -h -o %T 2>/dev/null | grep -q idle && break
  sleep 0.2
done
sinfo -h -o %T | grep -q idle || { echo "slurm-e2e: the node did not become idle:" >&2; tail -20 "$work/log/"*.log >&2; exit 1; }
echo "slurm-e2e: Slurm $(sinfo -V | cut -d' ' -f2) up on $host"

steps=500
args="--hidden 256"
slow="--sleep-ms 30"  # the job, not the reference: time to preempt it (sleeping changes no number)
cd "$work/job"
# The uninterrupted reference: the same program on 2 ranks, without snapshots.
AUTOSNAP_CONFIG= "$OLDPWD/scripts/launch_local.sh" 2 "$build/examples/train_ddp" --steps $steps --out reference.pt $args \
  > reference.log 2>&1 || { cat reference.log; exit 1; }

cat > autosnap.yaml <<YAML
directory: $work/job/checkpoints/\${SLURM_JOB_ID}
triggers: {every_steps: 50}
retention: {keep_last: 0}
control: {socket: false}
signals: {snapshot: [], snapshot_and_stop: [SIGUSR1, SIGTERM], after_stop: requeue}
distributed: {timeout_seconds: 60}
log_level: info
YAML
job=$(AUTOSNAP_CONFIG=$work/job/autosnap.yaml TRAIN_DDP=$build/examples/train_ddp STEPS=$steps OUT=$work/job/final.pt \
  TRAIN_ARGS="$args $slow" sbatch --parsable --chdir="$work/job" --output="$work/job/job-%j.out" \
  "$OLDPWD/scripts/slurm/train.sbatch")
echo "slurm-e2e: submitted job $job"
log=$work/job/job-$job.out
for _ in $(seq 300); do grep -q "step     50" "$log" 2>/dev/null && break; sleep 0.2; done
grep -q "step     50" "$log" || { echo "slurm-e2e: the job did not start training:" >&2; cat "$log" >&2; exit 1; }
scancel --signal=USR1 "$job"
echo "slurm-e2e: sent SIGUSR1 to job $job (its tasks)"

state=""
for _ in $(seq 900); do
  state=$(scontrol show job "$job" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 || true)
  [ "$state" = COMPLETED ] || [ "$state" = FAILED ] || [ "$state" = CANCELLED ] && break
  sleep 0.2
done
echo "slurm-e2e: job $job is $state; its output:"
sed 's/^/  | /' "$log"
[ "$state" = COMPLETED ] || { echo "slurm-e2e: expected COMPLETED" >&2; tail -30 "$work/log/slurmctld.log" >&2; exit 1; }
grep -q "run 2," "$log" || { echo "slurm-e2e: the job was not requeued" >&2; exit 1; }
grep -q "rank 0 of 2: resumed from step" "$log" || { echo "slurm-e2e: the requeued run did not resume" >&2; exit 1; }
grep -rq 'slurm_restart_count: "1"' checkpoints/"$job"/step-*/manifest.yaml ||
  { echo "slurm-e2e: no snapshot of the requeued run records slurm_restart_count 1" >&2; exit 1; }
cmp reference.pt final.pt || { echo "slurm-e2e: the requeued job's result differs from the uninterrupted run's" >&2; exit 1; }
echo "slurm-e2e: OK: stopped by SIGUSR1, requeued, resumed, bitwise equal to the uninterrupted run"
