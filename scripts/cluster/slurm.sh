#!/bin/bash
# slurm.sh - Slurm across the namespace nodes of nodes.sh (run `nodes.sh up N` first;
# needs root).
# start: own munged (own key, socket $MN_DIR/munge/munge.sock), slurmctld on the host,
#        one slurmd inside each running node; waits until every node is idle.
# stop:  slurmd (killed from inside its node: its pid file holds a node-PID), slurmctld, munged.
# Clients: export SLURM_CONF=$MN_DIR/slurm/slurm.conf   (on the host or inside a node)
set -euo pipefail
HERE=$(dirname "$(readlink -f "$0")")
MN_DIR=${MN_DIR:-/tmp/autosnap-nodes}
MN_NET=${MN_NET:-10.78.0}
D=$MN_DIR/slurm
MD=$MN_DIR/munge
CONF=$D/slurm.conf
export SLURM_CONF=$CONF
nodes() { ls /run/netns 2>/dev/null | sed -n 's/^asn-\(node[1-9]\)$/\1/p'; }
[ "$(id -u)" -eq 0 ] || { echo "slurm.sh: needs root (munged, slurmctld, slurmd); not run" >&2; exit 1; }

start_munge() {
    install -d -o munge -g munge -m 0755 "$MD"   # socket dir: o+x required
    if [ ! -s "$MD/munge.key" ]; then
        dd if=/dev/urandom of="$MD/munge.key" bs=1024 count=1 status=none
        chown munge:munge "$MD/munge.key"; chmod 0400 "$MD/munge.key"
    fi
    runuser -u munge -- munged --socket="$MD/munge.sock" --key-file="$MD/munge.key" \
        --pid-file="$MD/munged.pid" --log-file="$MD/munged.log" --seed-file="$MD/munged.seed"
}

start() {
    local n i cpus mem
    mkdir -p "$D"/{state,spool,run,log}
    for i in $(nodes); do mkdir -p "$D/spool/$i"; done
    [ -S "$MD/munge.sock" ] || start_munge
    for i in $(seq 1 50); do   # wait until our munged answers
        munge -S "$MD/munge.sock" -n 2>/dev/null | unmunge -S "$MD/munge.sock" >/dev/null 2>&1 && break
        sleep 0.1
    done
    cpus=$(nproc); mem=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 / 4 ))
    n=""
    for i in $(nodes | sed 's/node//'); do
        n+="NodeName=node$i NodeAddr=$MN_NET.$((10 + i)) NodeHostname=node$i CPUs=$cpus"
        n+=" Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem State=UNKNOWN"$'\n'
    done
    [ -n "$n" ] || { echo "no nodes; run nodes.sh up N" >&2; exit 1; }
    sed -e "s|@DIR@|$D|g" -e "s|@HOST@|$(hostname)|g" -e "s|@HEADADDR@|$MN_NET.1|g" \
        -e "s|@MUNGESOCK@|$MD/munge.sock|g" "$HERE/slurm.conf.in" |
        awk -v nodes="$n" '{ if ($0 == "@NODES@") printf "%s", nodes; else print }' > "$CONF"
    slurmctld -f "$CONF"
    for i in $(nodes); do "$HERE/nodes.sh" exec "$i" slurmd -f "$CONF"; done
    for i in $(seq 1 100); do
        [ "$(sinfo -h -o '%T' | sort -u)" = idle ] && { sinfo; return 0; }
        sleep 0.2
    done
    sinfo; echo "nodes not idle after 20 s" >&2; exit 1
}

stop() {
    local i
    for i in $(nodes); do
        [ -s "$D/run/slurmd-$i.pid" ] &&
            "$HERE/nodes.sh" exec "$i" sh -c "kill \$(cat $D/run/slurmd-$i.pid)" 2>/dev/null || true
    done
    [ -s "$D/run/slurmctld.pid" ] && kill "$(cat "$D/run/slurmctld.pid")" 2>/dev/null || true
    [ -s "$MD/munged.pid" ] && kill "$(cat "$MD/munged.pid")" 2>/dev/null || true
    sleep 1
}

# restart a crashed node: its namespaces (if gone) + slurmd; it registers and is idle in <1 s
node_up() {
    [ -n "$("$HERE/nodes.sh" pid "$1" 2>/dev/null)" ] || "$HERE/nodes.sh" start "$1"
    "$HERE/nodes.sh" exec "$1" slurmd -f "$CONF"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    node-up) node_up "$2" ;;
    *) echo "usage: slurm.sh start|stop|node-up NODE   (then export SLURM_CONF=$CONF)"; exit 2 ;;
esac
