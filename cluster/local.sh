#!/usr/bin/env bash
# cluster/local.sh -- a REAL multi-node Ray cluster on one machine, for e2e tests
# and for trying `ray job submit` exactly as it is used against a remote cluster.
#
#   cluster/local.sh up [--workers K] [--cpus-per-node C] [--gpus-per-node G]
#                       [--object-store-mb M] [--port P] [--dashboard-port D]
#                       [--auth token|disabled] [--timeout S]
#   cluster/local.sh env       # export lines:  eval "$(cluster/local.sh env)"
#   cluster/local.sh status    # `ray status` of this cluster; exit 1 if it is down
#   cluster/local.sh down [--grace S]
#
# Topology: one head (`ray start --head`) + K worker nodes (`ray start
# --address=<node ip>:P`). Every node is its own raylet with its own --num-cpus
# and --object-store-memory. The head runs the dashboard, bound to 127.0.0.1
# (the Jobs server lives in it, so `ray job submit` needs --include-dashboard).
#
# Loopback: Ray 2.60 `ray start` silently REWRITES --node-ip-address=127.0.0.1
# (and "localhost") to the host's routable IP (services.resolve_ip_for_localhost),
# so with 127.0.0.1 every node, the GCS address and the Ray client server are
# advertised on the host interface. Any other loopback address is kept, so the
# nodes use --node-ip-address=127.0.0.2 (Linux routes all of 127/8 to lo;
# override with TAGGING_CLUSTER_NODE_IP). RAY_ADDRESS is then 127.0.0.2:P
# (127.0.0.1:P also connects). Note that gcs_server and raylets still LISTEN on
# all interfaces whatever the node IP (Ray's choice, checked with `ss -ltnp`),
# which is one more reason to keep token auth on (below).
#
# Ports: GCS --port (default 6390) and dashboard --dashboard-port (default 8275)
# are chosen so as not to clash with a default `ray.init()`/`ray start`
# (6379/8265). Two per-node ports that Ray would otherwise fix (dashboard agent
# HTTP 52365, Ray client server 10001) clash when several nodes -- or another
# Ray -- share the host, so `up` picks free ones for each node and records them.
# All other Ray ports are left for Ray to choose at random.
#
# Temp dir: Ray keeps a session dir per node (logs, sockets, runtime envs) under
# the node's --temp-dir. The head uses the cluster's temp dir, worker node i
# its own subdir <temp>/n<i>. They must NOT share one: each node's runtime-env
# agent unpacks a job's working_dir into <session>/runtime_resources and, when
# the package dir already exists, deletes and re-extracts it (Ray 2.60
# working_dir overwrite=True), so with a shared dir a task starting on a worker
# node wiped the directory that the job driver on the head was running in
# (seen: jobs.train's ONNX export failed with FileNotFoundError from
# os.getcwd()). It is NOT /tmp/ray, so it does not touch the `session_latest`
# of any other Ray on the host, and it is kept short (AF_UNIX socket paths are
# limited to 107 bytes): default /tmp/tagray-<uid>-<gcs port>; override with
# TAGGING_CLUSTER_TMP.
#
# Auth (Ray >= 2.59 turns token auth on for local clusters, and a process whose
# RAY_AUTH_MODE differs from the cluster's fails with AuthenticationError):
# CHOICE: token auth stays ON (default, `--auth token`), with a per-cluster token
# file in the state dir (mode 600). Every Ray command this script runs gets
# RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=<state>/auth_token, and `env`
# prints the same two exports, so `ray job submit`, `ray status`, drivers and
# workers (which inherit the raylet's environment) all agree. Reason: this host
# is shared (other users/sessions), and loopback binding alone does not stop
# another local user from running code on the cluster. The per-cluster token
# file also leaves ~/.ray/auth_token (used by plain ray.init()) untouched.
# `--auth disabled` exports RAY_AUTH_MODE=disabled everywhere instead.
# Never rely on RAY_AUTH_MODE being unset: `ray start --head` then silently
# switches to token mode iff ~/.ray/auth_token happens to exist. (Checked:
# without these variables `ray status` fails with AuthenticationError; with a
# wrong RAY_AUTH_TOKEN `ray job list` is refused.)
#
# RAY_ADDRESS: every node is started with RAY_ADDRESS=<node ip>:<port> in its
# environment, which all its workers inherit. Ray library code that runs inside
# actors and calls the State API without an address (Train V2's
# PlacementGroupCleaner, which frees the placement groups of stopped trials)
# otherwise looks for "the" Ray on the host by scanning for gcs_server
# processes, and fails ("Found multiple active Ray instances") as soon as any
# other Ray runs on the host (seen in the e2e test). Job drivers get their own
# RAY_ADDRESS from the job server anyway.
#
# One state dir = one cluster. For clusters side by side (e.g. parallel test
# sessions) give each its own TAGGING_CLUSTER_DIR, --port and --dashboard-port.
#
# State: ${TAGGING_CLUSTER_DIR:-$HOME/.tagging-cluster}: cluster.env (ports,
# node IP, temp dir, auth, session ids), auth_token, pids, logs/. `down` stops
# ONLY this cluster's processes, identified by: (1) command line containing this
# cluster's temp dir (gcs_server, raylets, dashboard, log monitors, workers);
# (2) session id: every `ray start` runs under setsid, and its daemons keep that
# session (this catches the Ray client server, whose command line names no
# temp dir); a session counts only while a member still names the temp dir;
# (3) all descendants of those (dashboard modules, agents, job drivers -- Ray
# puts drivers in new sessions); (4) PIDs recorded by `up`/`down` that are
# still alive with the same start time (orphans; recycled PIDs never match).
# Order as in `ray stop`: raylets, then the rest, GCS last; SIGTERM, SIGKILL
# after --grace, then a check that none is left. It never runs `ray stop`,
# which kills every Ray on the host (tests' own included).
#
# Ray binary: $RAY_BIN, else `ray` on PATH.
set -euo pipefail

PROG=$0
STATE_DIR=${TAGGING_CLUSTER_DIR:-$HOME/.tagging-cluster}
STATE_FILE=$STATE_DIR/cluster.env
RAY=${RAY_BIN:-ray}
TMP_MARKER=.tagging-cluster-tmp # marks a temp dir made by this script (only those are ever deleted)

usage() {
    cat <<EOF
usage: $PROG <command> [options]

commands:
  up      start a head + K worker Ray nodes on loopback and wait until all are alive
            --workers K           worker nodes besides the head        (default 1)
            --cpus-per-node C     --num-cpus of every node             (default 1)
            --gpus-per-node G     --num-gpus of every node             (default 0)
            --object-store-mb M   object store per node, MB            (default 300)
            --port P              GCS port                             (default 6390)
            --dashboard-port D    dashboard / Jobs API port            (default 8275)
            --auth MODE           token | disabled                     (default token)
            --timeout S           seconds to wait for all nodes        (default 120)
  env     print export lines (RAY_ADDRESS, RAY_API_SERVER_ADDRESS, RAY_AUTH_*)
            usage: eval "\$($PROG env)"; ray job submit --working-dir . -- python -m ...
  status  print nodes and resources (ray status); exit 1 if the cluster is down
  down    stop only this cluster's processes (SIGTERM, SIGKILL after grace)
            --grace S             seconds before SIGKILL               (default 20)

environment:
  TAGGING_CLUSTER_DIR      state dir (now: $STATE_DIR)
  RAY_BIN                  ray executable (now: $RAY)
  TAGGING_CLUSTER_NODE_IP  loopback address the nodes advertise (default 127.0.0.2;
                           Ray rewrites 127.0.0.1 to the host IP)
  TAGGING_CLUSTER_TMP      Ray temp dir of the cluster (default /tmp/tagray-<uid>-<port>)
EOF
}

die() { echo "$PROG: $*" >&2; exit 1; }
log() { echo "$PROG: $*" >&2; }

need_ray() {
    command -v "$RAY" >/dev/null 2>&1 || die "ray not found (set RAY_BIN or put ray on PATH)"
}

# Python that belongs to the ray install (for free-port picking); fall back to python3.
ray_python() {
    local rp shebang
    rp=$(command -v "$RAY" 2>/dev/null || true)
    if [[ -n $rp ]]; then
        shebang=$(head -n1 "$rp" 2>/dev/null || true)
        if [[ $shebang == '#!'*python* ]]; then
            shebang=${shebang#\#!}
            shebang=${shebang%% *}
            [[ -x $shebang ]] && { echo "$shebang"; return; }
        fi
    fi
    command -v python3 || die "python3 not found"
}

# free_ports N -> N distinct TCP ports, currently free on all addresses
free_ports() {
    "$(ray_python)" - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

port_in_use() {
    "$(ray_python)" - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT, as servers do
try:
    s.bind(("", int(sys.argv[1])))
except OSError:
    sys.exit(0)
finally:
    s.close()
sys.exit(1)
PY
}

load_state() {
    [[ -f $STATE_FILE ]] || return 1
    # shellcheck disable=SC1090
    source "$STATE_FILE"
    NODE_IP=${NODE_IP:-127.0.0.2}
}

# Export the auth environment of the loaded cluster into this shell.
apply_auth_env() {
    export RAY_AUTH_MODE=$AUTH_MODE
    if [[ $AUTH_MODE == token ]]; then
        export RAY_AUTH_TOKEN_PATH=$STATE_DIR/auth_token
    else
        unset RAY_AUTH_TOKEN_PATH
    fi
    unset RAY_AUTH_TOKEN
}

# PIDs of this cluster's live processes: those whose command line contains
# this cluster's temp dir, those in a session started by `up` (every `ray
# start` runs under setsid; its daemons and their workers keep that session),
# every descendant of those (dashboard modules, agents, workers, job drivers,
# which Ray starts in sessions of their own), and recorded PIDs that are still
# alive with the same start time (orphans; a recycled PID is never touched).
cluster_pids() {
    {
        # Values go to awk through the environment: on its command line the
        # temp dir would make awk itself match.
        ps -eo pid=,ppid=,sid=,stat=,args= 2>/dev/null |
            LC_TD=${TEMP_DIR:-} LC_SIDS=" ${SIDS:-} " LC_SELF=$$ awk '
            BEGIN { td = ENVIRON["LC_TD"]; sids = ENVIRON["LC_SIDS"]; self = ENVIRON["LC_SELF"] }
            {
                pid = $1
                if (pid == self || $4 ~ /^Z/) next
                ppid[pid] = $2; sid[pid] = $3
                args = $0; sub(/^[ \t]*[0-9]+[ \t]+[0-9]+[ \t]+[0-9]+[ \t]+[^ \t]+[ \t]?/, "", args)
                if (td != "" && (index(args " ", td "/") || index(args " ", td " ") || index(args, td "="))) {
                    mine[pid] = 1
                    # A session of ours counts only while one of its members still
                    # names our temp dir (guards against a recycled session id).
                    if (index(sids, " " $3 " ")) oursid[$3] = 1
                }
            }
            END {
                for (p in sid) if (sid[p] in oursid) mine[p] = 1
                do {
                    changed = 0
                    for (p in ppid) if (!(p in mine) && (ppid[p] in mine)) { mine[p] = 1; changed = 1 }
                } while (changed)
                for (p in mine) print p
            }'
        if [[ -f $STATE_DIR/pids ]]; then
            local rpid rstart
            while read -r rpid rstart _; do
                [[ -n $rpid && -r /proc/$rpid/stat ]] || continue
                if [[ $(proc_start "$rpid") == "$rstart" ]]; then echo "$rpid"; fi
            done <"$STATE_DIR/pids"
        fi
        true # a vanished process is not an error (and must not trip pipefail)
    } | sort -un
}

proc_start() { # field 22 of /proc/PID/stat (start time in clock ticks)
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    echo "${20}"
}

record_pids() {
    local pid
    : >"$STATE_DIR/pids.tmp"
    for pid in $(cluster_pids); do
        echo "$pid $(proc_start "$pid") $(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | cut -c1-160)" \
            >>"$STATE_DIR/pids.tmp"
    done
    mv "$STATE_DIR/pids.tmp" "$STATE_DIR/pids"
}

alive_nodes() { # number of ALIVE nodes according to the GCS, or empty on error
    "$RAY" status --address "$NODE_IP:$GCS_PORT" 2>/dev/null |
        awk '/^Active:/{a=1;next} /^(Pending|Recent failures):/{a=0} a && /node_/{n++} END{print n+0}'
}

# start_node LOG ARGS... : `ray start ARGS` in a session of its own (setsid), so
# that `down` can find every process it leaves behind by session id.
start_node() {
    local logf=$1 pid rc=0
    shift
    # RAY_ADDRESS for the node's processes and their workers (see the header).
    if command -v setsid >/dev/null 2>&1; then
        RAY_ADDRESS=$NODE_IP:$GCS_PORT setsid "$RAY" start "$@" >"$logf" 2>&1 </dev/null &
    else
        RAY_ADDRESS=$NODE_IP:$GCS_PORT "$RAY" start "$@" >"$logf" 2>&1 </dev/null &
    fi
    pid=$!
    SIDS="${SIDS:+$SIDS }$pid"
    echo "SIDS=\"$SIDS\"" >>"$STATE_FILE"
    wait "$pid" || rc=$?
    record_pids
    return "$rc"
}

cmd_up() {
    local workers=1 cpus=1 gpus=0 store_mb=300 port=6390 dash=8275 auth=token timeout=120
    while (($#)); do
        case $1 in
            --workers) workers=${2:?}; shift 2 ;;
            --cpus-per-node) cpus=${2:?}; shift 2 ;;
            --gpus-per-node) gpus=${2:?}; shift 2 ;;
            --object-store-mb) store_mb=${2:?}; shift 2 ;;
            --port) port=${2:?}; shift 2 ;;
            --dashboard-port) dash=${2:?}; shift 2 ;;
            --auth) auth=${2:?}; shift 2 ;;
            --timeout) timeout=${2:?}; shift 2 ;;
            -h|--help) usage; exit 0 ;;
            *) die "up: unknown option '$1' (see --help)" ;;
        esac
    done
    [[ $workers =~ ^[0-9]+$ ]] || die "up: --workers must be a non-negative integer"
    [[ $cpus =~ ^[0-9]+$ ]] || die "up: --cpus-per-node must be an integer"
    [[ $gpus =~ ^[0-9]+$ ]] || die "up: --gpus-per-node must be an integer"
    [[ $store_mb =~ ^[0-9]+$ && $store_mb -ge 80 ]] || die "up: --object-store-mb must be an integer >= 80"
    [[ $port =~ ^[0-9]+$ && $dash =~ ^[0-9]+$ ]] || die "up: ports must be integers"
    [[ $auth == token || $auth == disabled ]] || die "up: --auth must be token or disabled"
    need_ray

    if load_state; then
        if [[ -n $(cluster_pids) ]]; then
            die "up: a cluster from $STATE_DIR is already running ($NODE_IP:$GCS_PORT); run '$PROG down' first"
        fi
        log "removing stale state of a stopped cluster"
        if [[ -n ${TEMP_DIR:-} && -e $TEMP_DIR/$TMP_MARKER ]]; then rm -rf "$TEMP_DIR"; fi
    fi
    port_in_use "$port" && die "up: GCS port $port is already in use"
    port_in_use "$dash" && die "up: dashboard port $dash is already in use"

    mkdir -p "$STATE_DIR/logs"
    chmod 700 "$STATE_DIR"
    rm -f "$STATE_DIR/pids" "$STATE_FILE" "$STATE_DIR"/logs/*.log

    GCS_PORT=$port DASH_PORT=$dash AUTH_MODE=$auth
    NODE_IP=${TAGGING_CLUSTER_NODE_IP:-127.0.0.2}
    TEMP_DIR=${TAGGING_CLUSTER_TMP:-/tmp/tagray-$(id -u)-$port}
    TEMP_DIR=${TEMP_DIR%/}
    # Ray's AF_UNIX sockets live at <node temp>/session_<date>_<pid>/sockets/plasma_store,
    # about 65 bytes below the node's temp dir (a worker node's is <temp>/n<i>), and
    # socket paths are limited to 107 bytes.
    ((${#TEMP_DIR} + 1 + ${#workers} + 1 <= 40)) ||
        die "up: temp dir path too long for Ray's sockets (max $((38 - ${#workers})) chars): $TEMP_DIR"
    if [[ -e $TEMP_DIR && ! -e $TEMP_DIR/$TMP_MARKER && -n $(ls -A "$TEMP_DIR" 2>/dev/null) ]]; then
        die "up: temp dir $TEMP_DIR exists, is not empty and was not made by $PROG; pick another (TAGGING_CLUSTER_TMP)"
    fi
    if [[ -e $TEMP_DIR/$TMP_MARKER ]]; then rm -rf "$TEMP_DIR"; fi # leftovers of a cluster of ours
    mkdir -p "$TEMP_DIR"
    : >"$TEMP_DIR/$TMP_MARKER"
    if [[ $auth == token ]]; then
        (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$STATE_DIR/auth_token")
    else
        rm -f "$STATE_DIR/auth_token"
    fi
    # 2 per node (agent HTTP listen port; client server on the head) + spare.
    local ports
    read -r -a ports <<<"$(free_ports $((workers + 2)))"
    CLIENT_PORT=${ports[0]}
    cat >"$STATE_FILE" <<EOF
GCS_PORT=$GCS_PORT
DASH_PORT=$DASH_PORT
CLIENT_PORT=$CLIENT_PORT
AUTH_MODE=$AUTH_MODE
TEMP_DIR=$TEMP_DIR
NODE_IP=$NODE_IP
WORKERS=$workers
CPUS_PER_NODE=$cpus
GPUS_PER_NODE=$gpus
OBJECT_STORE_MB=$store_mb
RAY_BIN=$(command -v "$RAY")
STARTED_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF
    apply_auth_env
    unset RAY_ADDRESS RAY_API_SERVER_ADDRESS
    local store_bytes=$((store_mb * 1024 * 1024))
    local common=(--node-ip-address="$NODE_IP" --num-cpus="$cpus" --num-gpus="$gpus"
        --object-store-memory="$store_bytes" --disable-usage-stats)

    log "starting head on $NODE_IP:$GCS_PORT (dashboard $DASH_PORT, auth $AUTH_MODE, temp $TEMP_DIR)"
    if ! start_node "$STATE_DIR/logs/head.log" --head --port="$GCS_PORT" "${common[@]}" --temp-dir="$TEMP_DIR" \
        --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$DASH_PORT" \
        --ray-client-server-port="$CLIENT_PORT" \
        --dashboard-agent-listen-port="${ports[1]}"; then
        local reason
        reason=$(grep -m1 -iE 'error|failed|exception' "$STATE_DIR/logs/head.log" || tail -n1 "$STATE_DIR/logs/head.log")
        (cmd_down --quiet) || true # subshell: keep our own one-line reason
        die "up: head failed to start: ${reason} (log: $STATE_DIR/logs/head.log)"
    fi

    local i
    for ((i = 1; i <= workers; i++)); do
        log "starting worker node $i/$workers"
        mkdir -p "$TEMP_DIR/n$i" # its own temp dir (see the header: runtime envs)
        if ! start_node "$STATE_DIR/logs/worker-$i.log" --address="$NODE_IP:$GCS_PORT" "${common[@]}" \
            --temp-dir="$TEMP_DIR/n$i" \
            --dashboard-agent-listen-port="${ports[$((i + 1))]}"; then
            local reason
            reason=$(grep -m1 -iE 'error|failed|exception' "$STATE_DIR/logs/worker-$i.log" || tail -n1 "$STATE_DIR/logs/worker-$i.log")
            (cmd_down --quiet) || true # subshell: keep our own one-line reason
            die "up: worker node $i failed to start: ${reason} (log: $STATE_DIR/logs/worker-$i.log)"
        fi
    done

    local want=$((workers + 1)) n=0 deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        n=$(alive_nodes || true)
        [[ ${n:-0} -ge $want ]] && break
        sleep 2
    done
    record_pids
    if [[ ${n:-0} -lt $want ]]; then
        (cmd_down --quiet) || true # subshell: keep our own one-line reason
        die "up: only ${n:-0}/$want nodes alive after ${timeout}s (logs: $STATE_DIR/logs, $TEMP_DIR/session_latest/logs, $TEMP_DIR/n*/session_latest/logs)"
    fi
    log "cluster up: $want nodes alive; RAY_ADDRESS=$NODE_IP:$GCS_PORT  dashboard http://127.0.0.1:$DASH_PORT"
    log "use: eval \"\$($0 env)\""
}

cmd_env() {
    load_state || die "env: no cluster state in $STATE_DIR (run '$PROG up')"
    echo "export RAY_ADDRESS=$NODE_IP:$GCS_PORT"
    echo "export RAY_API_SERVER_ADDRESS=http://127.0.0.1:$DASH_PORT"
    echo "export RAY_AUTH_MODE=$AUTH_MODE"
    if [[ $AUTH_MODE == token ]]; then
        echo "export RAY_AUTH_TOKEN_PATH=$STATE_DIR/auth_token"
    else
        echo "unset RAY_AUTH_TOKEN_PATH"
    fi
    echo "unset RAY_AUTH_TOKEN"
}

cmd_status() {
    load_state || die "status: no cluster state in $STATE_DIR (cluster is down)"
    need_ray
    apply_auth_env
    [[ -n $(cluster_pids) ]] || die "status: cluster is down (no processes for $TEMP_DIR)"
    echo "cluster: $NODE_IP:$GCS_PORT  dashboard: http://127.0.0.1:$DASH_PORT  auth: $AUTH_MODE  expected nodes: $((WORKERS + 1))"
    if ! "$RAY" status --address "$NODE_IP:$GCS_PORT"; then
        die "status: ray status failed for $NODE_IP:$GCS_PORT"
    fi
    local n
    n=$(alive_nodes || true)
    if [[ ${n:-0} -lt $((WORKERS + 1)) ]]; then
        die "status: only ${n:-0}/$((WORKERS + 1)) nodes alive"
    fi
}

# bucket_pids raylet|gcs|other : this cluster's live PIDs of that kind
bucket_pids() {
    local pids
    pids=$(cluster_pids | tr '\n' ',')
    pids=${pids%,}
    [[ -n $pids ]] || return 0
    { ps -o pid=,comm= -p "$pids" 2>/dev/null || true; } | awk -v kind="$1" '
        kind == "raylet" && $2 == "raylet" { print $1; next }
        kind == "gcs" && $2 == "gcs_server" { print $1; next }
        kind == "other" && $2 != "raylet" && $2 != "gcs_server" { print $1 }'
}

# stop_bucket KIND GRACE : SIGTERM, wait up to GRACE s, SIGKILL survivors
stop_bucket() {
    local kind=$1 grace=$2 pids deadline
    pids=$(bucket_pids "$kind" | tr '\n' ' ')
    [[ -n ${pids// /} ]] || return 0
    ((quiet)) || log "down: SIGTERM to $kind ($(wc -w <<<"$pids")): $pids"
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    deadline=$((SECONDS + grace))
    while ((SECONDS < deadline)); do
        [[ -z $(bucket_pids "$kind") ]] && return 0
        sleep 1
    done
    pids=$(bucket_pids "$kind" | tr '\n' ' ')
    [[ -n ${pids// /} ]] || return 0
    log "down: SIGKILL to $kind still alive after ${grace}s: $pids"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
}

cmd_down() {
    local grace=20 quiet=0
    while (($#)); do
        case $1 in
            --grace) grace=${2:?}; shift 2 ;;
            --quiet) quiet=1; shift ;;
            -h|--help) usage; exit 0 ;;
            *) die "down: unknown option '$1' (see --help)" ;;
        esac
    done
    [[ $grace =~ ^[0-9]+$ ]] || die "down: --grace must be an integer"
    if ! load_state; then
        ((quiet)) || log "down: no cluster state in $STATE_DIR; nothing to do"
        return 0
    fi
    record_pids # snapshot with start times: tracks job drivers even once orphaned
    if [[ -z $(cluster_pids) ]]; then
        ((quiet)) || log "down: no processes left for this cluster"
    else
        # Same order as `ray stop`: raylets first (their workers and agents
        # fate-share), then everything else, the GCS last (SIGTERMed while the
        # rest still runs, gcs_server 2.60 can hang in shutdown indefinitely).
        stop_bucket raylet "$grace"
        stop_bucket other "$grace"
        stop_bucket gcs "$grace"
        local pids deadline=$((SECONDS + 10))
        while ((SECONDS < deadline)); do
            pids=$(cluster_pids | tr '\n' ' ')
            [[ -z ${pids// /} ]] && break
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null || true
            sleep 1
        done
        pids=$(cluster_pids | tr '\n' ' ')
        [[ -z ${pids// /} ]] || die "down: processes still alive: $pids"
    fi
    if [[ -n $TEMP_DIR && -e $TEMP_DIR/$TMP_MARKER ]]; then rm -rf "$TEMP_DIR"; fi
    rm -f "$STATE_FILE" "$STATE_DIR/pids" "$STATE_DIR/auth_token"
    ((quiet)) || log "down: cluster $NODE_IP:$GCS_PORT stopped; no process left"
}

main() {
    local cmd=${1:-}
    [[ $# -gt 0 ]] && shift
    case $cmd in
        up) cmd_up "$@" ;;
        env) cmd_env "$@" ;;
        status) cmd_status "$@" ;;
        down) cmd_down "$@" ;;
        -h|--help|help) usage ;;
        '') usage >&2; exit 2 ;;
        *) usage >&2; die "unknown command '$cmd'" ;;
    esac
}

main "$@"
