#!/usr/bin/env bash
# A real streaming replica of the local PostgreSQL server, for the replica tests and the
# cluster run: a second cluster (Debian's pg_createcluster/pg_ctlcluster) on REPLICA_PORT,
# made with pg_basebackup from PRIMARY_PORT and streaming from it through a replication
# slot. Idempotent: `start` leaves a running, streaming replica whatever state it finds.
#
#   deploy/replica.sh start    create (first time) and start; wait until it streams
#   deploy/replica.sh stop     stop it (the slot keeps the WAL it has not received)
#   deploy/replica.sh status   print its state and replication lag; exit 1 unless streaming
#   deploy/replica.sh destroy  stop it, drop the cluster and the primary's slot
#
# Runs as root (it edits the primary's pg_hba.conf once: replication from 127.0.0.1) and
# as the postgres user for the server's own tools. The replica holds every database of the
# primary: point DATABASE_REPLICA_URLS_<ALIAS> at postgres://postgres@127.0.0.1:5433/<db>.
set -euo pipefail

VERSION="${PG_VERSION:-15}"
PRIMARY_PORT="${PRIMARY_PORT:-5432}"
REPLICA_PORT="${REPLICA_PORT:-5433}"
CLUSTER="${REPLICA_CLUSTER:-replica}"
SLOT="${REPLICA_SLOT:-dp_replica}"
DATA="/var/lib/postgresql/$VERSION/$CLUSTER"

as_postgres() { runuser -u postgres -- "$@"; }
primary_sql() { as_postgres psql -X -q -At -p "$PRIMARY_PORT" -h 127.0.0.1 -d postgres -c "$1"; }
replica_sql() { as_postgres psql -X -q -At -p "$REPLICA_PORT" -h 127.0.0.1 -d postgres -c "$1"; }
cluster_exists() { pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" '$1 == v && $2 == c' | grep -q .; }
cluster_online() { pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" '$1 == v && $2 == c && $4 ~ /online/' | grep -q .; }

allow_replication() {
    # The machine's server trusts 127.0.0.1 for databases, not yet for replication.
    local hba
    hba="$(primary_sql 'SHOW hba_file')"
    if ! grep -Eq '^host[[:space:]]+replication[[:space:]]+all[[:space:]]+127\.0\.0\.1/32' "$hba"; then
        echo "host replication all 127.0.0.1/32 trust" >>"$hba"
        primary_sql 'SELECT pg_reload_conf()' >/dev/null
    fi
}

create() {
    allow_replication
    # Only the cluster's configuration (port, logs) is kept: its data directory is replaced
    # by the base backup, which --write-recovery-conf makes a standby streaming through
    # the slot. A backup cut short (no standby.signal) is taken again.
    if ! cluster_exists; then
        pg_createcluster "$VERSION" "$CLUSTER" --port "$REPLICA_PORT" >/dev/null
        # Clients reach the replica as they reach the primary (this machine: trust on loopback).
        cp "$(primary_sql 'SHOW hba_file')" "/etc/postgresql/$VERSION/$CLUSTER/pg_hba.conf"
    fi
    [ -f "$DATA/standby.signal" ] && return 0
    install -d -o postgres -g postgres -m 700 "$DATA"
    find "$DATA" -mindepth 1 -delete
    if [ -z "$(primary_sql "SELECT 1 FROM pg_replication_slots WHERE slot_name = '$SLOT'")" ]; then
        primary_sql "SELECT pg_create_physical_replication_slot('$SLOT')" >/dev/null
    fi
    as_postgres pg_basebackup -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -D "$DATA" \
        --wal-method=stream --write-recovery-conf --slot="$SLOT" --checkpoint=fast
    # The standby names itself in pg_stat_replication by its cluster name.
    sed -i "s/^primary_conninfo = '/primary_conninfo = 'application_name=$CLUSTER /" \
        "$DATA/postgresql.auto.conf"
}

wait_streaming() {
    for _ in $(seq 1 240); do  # 2 min: a backup taken under heavy writes replays a while
        if [ "$(primary_sql "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND application_name = '$CLUSTER'")" = 1 ] \
            && [ "$(replica_sql 'SELECT pg_is_in_recovery()' 2>/dev/null)" = t ]; then
            return 0
        fi
        sleep 0.5
    done
    echo "replica on port $REPLICA_PORT did not start streaming" >&2
    return 1
}

start() {
    create
    cluster_online || pg_ctlcluster "$VERSION" "$CLUSTER" start
    wait_streaming
    status
}

status() {
    if ! cluster_online; then
        echo "replica $VERSION/$CLUSTER on port $REPLICA_PORT: not running"
        return 1
    fi
    local state lag
    state="$(primary_sql "SELECT state FROM pg_stat_replication WHERE application_name = '$CLUSTER'")"
    # How far replay is behind the primary (as api/db/replicas.py measures it), not the age
    # of the last replayed commit: an idle primary's caught-up replica lags 0.
    lag="$(primary_sql "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) || ' bytes of WAL not replayed (replay_lag ' || coalesce(round(extract(epoch FROM replay_lag) * 1000)::text || ' ms', 'none: caught up') || ')' FROM pg_stat_replication WHERE application_name = '$CLUSTER'")"
    echo "replica $VERSION/$CLUSTER on port $REPLICA_PORT: ${state:-not connected}; ${lag:-lag unknown}"
    [ "$state" = streaming ]
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
    if [ -n "$(primary_sql "SELECT 1 FROM pg_replication_slots WHERE slot_name = '$SLOT'")" ]; then
        primary_sql "SELECT pg_drop_replication_slot('$SLOT')" >/dev/null
    fi
}

case "${1:-}" in
start | stop | status | destroy) "$1" ;;
*)
    echo "usage: $0 start|stop|status|destroy" >&2
    exit 2
    ;;
esac
