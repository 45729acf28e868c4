#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster for the tests (installing the server
# with apt-get when it is missing) and print the URL to reach it.
#   eval "$(bash .ci/postgres.sh start DIR)"   -> exports PREFORK_TEST_POSTGRES_URL
#   bash .ci/postgres.sh stop DIR
set -euo pipefail
action=${1:?start or stop}
dir=${2:?a directory for the cluster}
port=${PREFORK_TEST_POSTGRES_PORT:-}
if [ -z "$port" ]; then  # a free port, so a cluster already running here is no obstacle
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi

pgbin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

case "$action" in
start)
    if [ -z "$(pgbin)" ]; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
    fi
    bin=$(pgbin)
    mkdir -p "$dir"
    chown postgres "$dir"
    if [ ! -d "$dir/data" ]; then
        su postgres -c "$bin/initdb -D '$dir/data' -A trust -U postgres -E UTF8" >&2
    fi
    su postgres -c "$bin/pg_ctl -D '$dir/data' -l '$dir/log' -w -t 60 \
        -o '-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=on' start" >&2
    su postgres -c "psql -h 127.0.0.1 -p $port -U postgres -tAc \"SELECT 1 FROM pg_database WHERE datname='prefork_test'\"" \
        | grep -q 1 || su postgres -c "psql -h 127.0.0.1 -p $port -U postgres -c 'CREATE DATABASE prefork_test'" >&2
    echo "export PREFORK_TEST_POSTGRES_URL=postgresql://postgres:not-a-secret@127.0.0.1:$port/prefork_test"
    ;;
stop)
    bin=$(pgbin)
    if [ -n "$bin" ] && [ -d "$dir/data" ]; then
        su postgres -c "$bin/pg_ctl -D '$dir/data' -m fast -w stop" >&2 || true
    fi
    ;;
esac
