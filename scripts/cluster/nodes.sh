#!/bin/bash
# nodes.sh - N cluster nodes on one Linux host, made of namespaces (needs root),
# for autosnap's multi-node tests (scripts/multinode-e2e.sh). Derived from the
# measured sketch in the project's shared reference material.
#
# A node "nodeI" = network ns asn-nodeI (lo + eth0 = $MN_NET.(10+I)/24, default route via .1)
#   + UTS ns (hostname nodeI) + IPC ns + PID ns + mount ns with private tmpfs /tmp and
#   /dev/shm, /etc/hosts and /etc/resolv.conf bind-mounted from $MN_DIR; all else is the
#   host's (shared file system). $MN_DIR and $MN_SHARED live under /tmp on the host and
#   are re-bound into each node at the same path, so they stay shared.
# PID 1 of a node is a tiny reaper ("asn-init-nodeI"); `kill -9` of it (nodes.sh crash)
#   kills every process of that node at once. The netns survives (IP still answers ping).
# Host: bridge asn-br0 = $MN_NET.1/24, host-side veths asn-vI.
#
# Usage: nodes.sh up N            create node1..nodeN (N <= 9)
#        nodes.sh down            kill all node processes, delete netns/veths/bridge, hosts-del
#        nodes.sh exec NODE CMD.. run CMD inside NODE (cwd kept if visible there, else /)
#        nodes.sh pid NODE        host PID of NODE's init (for nsenter -t PID -n -u -i -m -p)
#        nodes.sh crash NODE      SIGKILL every process of NODE (netns + IP stay)
#        nodes.sh start NODE      (re)start NODE's namespaces in its existing netns after crash
#        nodes.sh link NODE up|down   host-side veth up/down (partition; no RST, packets vanish)
#        nodes.sh shape NODE RATE     limit NODE's link both ways (tc tbf, e.g. 4mbit; no netem here)
#        nodes.sh drop NODE PERCENT   drop PERCENT % of NODE's packets at random, both ways (nftables)
#        nodes.sh heal NODE           undo shape and drop
#        nodes.sh hosts-add|hosts-del  add/remove "IP nodeI # autosnap-nodes" lines in host /etc/hosts
#        nodes.sh status
set -euo pipefail
MN_DIR=${MN_DIR:-/tmp/autosnap-nodes}     # runtime state (pids, hosts, logs, slurm state)
MN_SHARED=${MN_SHARED:-/tmp/autosnap-shared}  # "shared file system" for users
MN_NET=${MN_NET:-10.78.0}
BR=asn-br0
SELF=$(readlink -f "$0")
TAG='# autosnap-nodes'

die() { echo "nodes.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (network, UTS, mount and PID namespaces, a bridge); not run"
idx() { [[ $1 =~ ^node([1-9])$ ]] || die "bad node name '$1' (node1..node9)"; echo "${BASH_REMATCH[1]}"; }

# PID (host view) of NODE's init, found via the netns and argv[0]; empty if not running.
init_pid() {
    local node=$1 p a
    [ -e /run/netns/asn-$node ] || return 0
    for p in $(ip netns pids "asn-$node" 2>/dev/null); do
        a=$( (tr '\0' '\n' < /proc/$p/cmdline) 2>/dev/null | head -n1) || continue
        [ "$a" = "asn-init-$node" ] && { echo "$p"; return 0; }
    done
    return 0
}

write_hosts() {  # /etc/hosts seen inside the nodes
    local n=$1 i
    {
        echo "127.0.0.1 localhost"
        echo "::1 localhost ip6-localhost ip6-loopback"
        echo "$MN_NET.1 asn-head $(hostname)"
        for i in $(seq 1 "$n"); do echo "$MN_NET.$((10 + i)) node$i"; done
    } > "$MN_DIR/hosts"
    # nodes have no route to the host's DNS server: an unknown name would take 20 s to fail.
    # No nameserver line -> glibc asks 127.0.0.1:53 in the node -> refused -> fails at once.
    echo "# autosnap-nodes node: no DNS, names come from /etc/hosts" > "$MN_DIR/resolv.conf"
}

net_node() {
    local i=$1 ns=asn-node$1
    ip netns add "$ns"
    ip link add "asn-v$i" type veth peer name eth0 netns "$ns"
    ip link set "asn-v$i" master "$BR" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$MN_NET.$((10 + i))/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$MN_NET.1"
}

start_node() {
    local node=$1 k p
    [ -z "$(init_pid "$node")" ] || die "$node already running"
    # setsid: own session; nsenter joins the netns and execs unshare, which forks the node's
    # PID 1 (_init). Not `ip netns exec`: it remounts /sys and so hides /sys/fs/cgroup.
    setsid nsenter --net="/run/netns/asn-$node" unshare --uts --ipc --mount --pid --fork \
        --mount-proc --propagation private /bin/bash "$SELF" _init "$node" \
        < /dev/null > "$MN_DIR/$node.init.log" 2>&1 &
    for k in $(seq 1 100); do
        p=$(init_pid "$node"); [ -n "$p" ] && { echo "$p" > "$MN_DIR/$node.pid"; return 0; }
        sleep 0.05
    done
    cat "$MN_DIR/$node.init.log" >&2; die "$node did not start"
}

# Runs as the first process of the new namespaces (PID 1 of the node).
_init() {
    local node=$1 d fd cg
    hostname "$node"
    # fresh sysfs (shows this netns's devices) + the host's cgroup tree (slurmd needs it)
    exec {cg}</sys/fs/cgroup
    mount -t sysfs "asn-sys-$node" /sys
    mount --no-canonicalize --rbind "/proc/self/fd/$cg" /sys/fs/cgroup
    eval "exec $cg<&-"
    mount --bind "$MN_DIR/hosts" /etc/hosts
    mount --bind "$MN_DIR/resolv.conf" /etc/resolv.conf
    declare -A keep=()
    for d in "$MN_DIR" "$MN_SHARED"; do            # hold dirs that the private /tmp will hide
        case $d in /tmp/*) exec {fd}<"$d"; keep[$d]=$fd ;; esac
    done
    mount -t tmpfs -o mode=1777,size=2g "asn-tmp-$node" /tmp
    mount -t tmpfs -o mode=1777,size=2g "asn-shm-$node" /dev/shm
    for d in "${!keep[@]}"; do
        mkdir -p "$d"
        mount --no-canonicalize --bind "/proc/self/fd/${keep[$d]}" "$d"
        eval "exec ${keep[$d]}<&-"
    done
    cd /
    # reaper: PID 1 must wait() for orphans (daemonized slurmd, slurmstepd, ...)
    exec -a "asn-init-$node" /usr/bin/python3 -c '
import os, signal, time
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
while True:
    try: os.wait()
    except ChildProcessError: time.sleep(0.5)
'
}

# Link faults. tbf on the host-side veth shapes what reaches the node, on the
# node's eth0 what leaves it; nftables drops at random in the node's netns.
shape() {
    local i; i=$(idx "$1")
    tc qdisc replace dev "asn-v$i" root tbf rate "$2" burst 32kb latency 400ms
    ip netns exec "asn-$1" tc qdisc replace dev eth0 root tbf rate "$2" burst 32kb latency 400ms
}
drop() {
    local ns="asn-$1"
    idx "$1" >/dev/null
    [[ $2 =~ ^[0-9]+$ ]] && [ "$2" -le 100 ] || die "PERCENT must be 0..100"
    ip netns exec "$ns" nft delete table inet asnfault 2>/dev/null || true
    ip netns exec "$ns" nft -f - <<NFT
table inet asnfault {
    chain in { type filter hook input priority 0; numgen random mod 100 < $2 drop; }
    chain out { type filter hook output priority 0; numgen random mod 100 < $2 drop; }
}
NFT
}
heal() {
    local i; i=$(idx "$1")
    tc qdisc del dev "asn-v$i" root 2>/dev/null || true
    ip netns exec "asn-$1" tc qdisc del dev eth0 root 2>/dev/null || true
    ip netns exec "asn-$1" nft delete table inet asnfault 2>/dev/null || true
}

hosts_del() {
    grep -q -- "$TAG\$" /etc/hosts || return 0
    local t; t=$(mktemp /tmp/asn-hosts.XXXXXX)
    grep -v -- "$TAG\$" /etc/hosts > "$t" || true
    cat "$t" > /etc/hosts; rm -f "$t"                # rewrite in place: inode/mode kept
}

hosts_add() {
    hosts_del
    local i
    for i in $(ls /run/netns 2>/dev/null | sed -n 's/^asn-node\([1-9]\)$/\1/p'); do
        echo "$MN_NET.$((10 + i)) node$i $TAG" >> /etc/hosts
    done
}

up() {
    local n=${1:-2} i
    [[ $n =~ ^[1-9]$ ]] || die "N must be 1..9"
    ip link show "$BR" >/dev/null 2>&1 && die "$BR exists; run down first"
    mkdir -p "$MN_DIR" "$MN_SHARED"; chmod 755 "$MN_DIR"; chmod 1777 "$MN_SHARED"
    write_hosts "$n"
    ip link add "$BR" type bridge
    ip addr add "$MN_NET.1/24" dev "$BR"
    ip link set "$BR" up
    for i in $(seq 1 "$n"); do net_node "$i"; start_node "node$i"; done
}

down() {
    local ns p node
    for ns in $(ls /run/netns 2>/dev/null | grep '^asn-node[1-9]$' || true); do
        node=${ns#asn-}
        p=$(init_pid "$node"); [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true
        sleep 0.2
        # anything else still in the netns (started with plain `ip netns exec`): by PID
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
        ip netns del "$ns"                          # also deletes the veth pair
        rm -f "$MN_DIR/$node.pid"
    done
    ip link del "$BR" 2>/dev/null || true
    hosts_del
}

cmd=${1:-}; shift || true
case $cmd in
    up) up "$@" ;;
    down) down ;;
    _init) _init "$@" ;;
    pid) p=$(init_pid "$1"); [ -n "$p" ] || die "$1 not running"; echo "$p" ;;
    exec)
        node=$1; shift; idx "$node" >/dev/null
        p=$(init_pid "$node"); [ -n "$p" ] || die "$node not running"
        exec nsenter -t "$p" -n -u -i -m -p -- /bin/sh -c \
            'cd "$0" 2>/dev/null || cd /; exec "$@"' "$PWD" "$@" ;;
    crash) p=$(init_pid "$1"); [ -n "$p" ] && kill -9 "$p"; rm -f "$MN_DIR/$1.pid" ;;
    start) idx "$1" >/dev/null; start_node "$1" ;;
    link) i=$(idx "$1"); ip link set "asn-v$i" "$2" ;;
    shape) shape "$1" "$2" ;;
    drop) drop "$1" "$2" ;;
    heal) heal "$1" ;;
    hosts-add) hosts_add ;;
    hosts-del) hosts_del ;;
    status)
        ip -br addr show "$BR" 2>/dev/null || echo "no bridge"
        for ns in $(ls /run/netns 2>/dev/null | grep '^asn-node' || true); do
            node=${ns#asn-}; p=$(init_pid "$node")
            echo "$node netns=$ns init=${p:-DOWN} procs=$(ip netns pids "$ns" | wc -l)" \
                 "$(ip -n "$ns" -br addr show eth0)"
        done ;;
    *) sed -n '2,/^set -euo/p' "$SELF" | sed '$d'; exit 2 ;;
esac
