#!/usr/bin/env bash
# A throwaway PostgreSQL server for the fault tests that stop and start their server
# (api/tests/test_restart.py, bench/faults.py --scenario restart): a cluster of its own
# (Debian's pg_createcluster/pg_ctlcluster) on FAULTS_PORT, so that restarting it never
# touches the machine's main server, which other work shares. Created once, reused after.
#
#   deploy/faults_cluster.sh start    create (first time) and start; wait until it accepts
#   deploy/faults_cluster.sh stop     stop it (fast: open sessions are ended, as a restart does)
#   deploy/faults_cluster.sh status   print its state; exit 1 unless it accepts connections
#   deploy/faults_cluster.sh destroy  stop it and drop the cluster
#
# Runs as root (the cluster belongs to the postgres user). Clients reach it as they reach
# the machine's server: postgres://postgres@127.0.0.1:5440/<db>, trusted on loopback only.
set -euo pipefail

VERSION="${PG_VERSION:-15}"
PORT="${FAULTS_PORT:-5440}"
CLUSTER="${FAULTS_CLUSTER:-faults}"

cluster_exists() { pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" '$1 == v && $2 == c' | grep -q .; }
cluster_online() { pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" '$1 == v && $2 == c && $4 ~ /online/' | grep -q .; }
accepting() { pg_isready -q -h 127.0.0.1 -p "$PORT"; }

create() {
    cluster_exists && return 0
    # Trust on loopback, peer on the socket (initdb's options, so pg_createcluster keeps
    # its pg_hba.conf); started by hand only, never at boot; small, as a test needs.
    pg_createcluster "$VERSION" "$CLUSTER" --port "$PORT" --start-conf=manual \
        -o shared_buffers=32MB -o max_connections=100 \
        -- --auth-host=trust --auth-local=peer >/dev/null
}

start() {
    create
    cluster_online || pg_ctlcluster "$VERSION" "$CLUSTER" start
    for _ in $(seq 1 100); do
        accepting && { status; return 0; }
        sleep 0.1
    done
    echo "PostgreSQL $VERSION/$CLUSTER on port $PORT does not accept connections" >&2
    return 1
}

status() {
    if ! cluster_online || ! accepting; then
        echo "PostgreSQL $VERSION/$CLUSTER on port $PORT: not running"
        return 1
    fi
    echo "PostgreSQL $VERSION/$CLUSTER on port $PORT: accepting connections"
}

stop() {
    if cluster_online; then
        pg_ctlcluster "$VERSION" "$CLUSTER" stop -m fast
    fi
}

destroy() {
    if cluster_exists; then
        stop
        pg_dropcluster "$VERSION" "$CLUSTER"
    fi
}

case "${1:-}" in
start | stop | status | destroy) "$1" ;;
*)
    echo "usage: $0 start|stop|status|destroy" >&2
    exit 2
    ;;
esac
