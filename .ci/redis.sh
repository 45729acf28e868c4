#!/usr/bin/env bash
# Start a throwaway Redis server for the tests (installing it with apt-get
# when it is missing) on a free port, and print the URL to reach it.
#   eval "$(bash .ci/redis.sh start DIR)"   -> exports PREFORK_TEST_REDIS_URL
#   bash .ci/redis.sh stop DIR
set -euo pipefail
action=${1:?start or stop}
dir=${2:?a directory for the server}

case "$action" in
start)
    if ! command -v redis-server >/dev/null; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >&2
    fi
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
        --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >&2
    for _ in $(seq 100); do  # up to 10 s for it to answer
        if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then
            echo "export PREFORK_TEST_REDIS_URL=redis://127.0.0.1:$port/0"
            exit 0
        fi
        sleep 0.1
    done
    echo "redis-server did not answer on port $port" >&2
    exit 1
    ;;
stop)
    if [ -f "$dir/redis.pid" ]; then
        kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
    fi
    ;;
esac
