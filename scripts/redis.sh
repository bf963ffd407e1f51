#!/usr/bin/env bash
# Local Redis for the cluster-mode tests.
#
#   scripts/redis.sh install      make sure `redis-server` is on PATH: as root, apt-get install
#                                 redis-server (Debian 12 ships Redis 7); otherwise say what to do
#   scripts/redis.sh start DIR    start redis-server on 127.0.0.1:<free port>, in the foreground of
#                                 a background process, with no persistence (nothing is written to
#                                 disk); writes DIR/redis.url, DIR/redis.pid, DIR/redis.log and
#                                 prints the URL (redis://127.0.0.1:PORT)
#   scripts/redis.sh stop DIR     stop the server started with `start DIR`
#
# Environment: REDIS_START_TIMEOUT seconds (default 10).
#
# On a machine with systemd, the Debian package also starts a system-wide
# redis-server on 127.0.0.1:6379; the tests never use it (they use the one
# `start` prints, or start their own).
set -euo pipefail

die() { echo "redis.sh: $*" >&2; exit 1; }

# shellcheck source=scripts/lib/loopback-server.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/loopback-server.sh"

usage() {
    echo "usage: $0 install | start DIR | stop DIR" >&2
    exit 2
}

cmd_install() {
    if command -v redis-server >/dev/null; then
        return 0
    fi
    if [[ "$(id -u)" -ne 0 ]]; then
        die "redis-server is not on PATH; install it (Debian/Ubuntu: sudo apt-get install -y redis-server;" \
            "macOS: brew install redis) or put a Redis 7 / Valkey 7+ redis-server on PATH, then run again"
    fi
    command -v apt-get >/dev/null || die "redis-server is not on PATH and there is no apt-get: install Redis 7 by hand"
    # A fresh machine (or container) may have no package lists yet.
    DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null \
        || die "apt-get install redis-server failed"
    command -v redis-server >/dev/null || die "redis-server missing after install"
}

# Exit 0 when a Redis at 127.0.0.1:$1 answers PING with PONG.
ping() {
    local port="$1" line
    if command -v redis-cli >/dev/null; then
        [[ "$(redis-cli -h 127.0.0.1 -p "${port}" ping 2>/dev/null)" == "PONG" ]]
        return
    fi
    # No redis-cli: speak RESP over bash's /dev/tcp.
    (
        exec 3<>"/dev/tcp/127.0.0.1/${port}" || exit 1
        printf '*1\r\n$4\r\nPING\r\n' >&3
        IFS= read -r -t 1 line <&3 || exit 1
        [[ "${line}" == "+PONG"* ]]
    ) 2>/dev/null
}

# Runs redis-server on 127.0.0.1:$1 in the foreground, with no RDB
# snapshots and no AOF (the tests' pacing state is worth nothing after the
# run); `--dir` keeps anything Redis might still write in DIR ($2).
launch() {
    exec redis-server --bind 127.0.0.1 --port "$1" --save "" --appendonly no \
        --daemonize no --dir "$2"
}

# server_start's probe: URL ($1) unused, the port ($2) is PINGed.
probe() { ping "$2"; }

cmd_start() {
    command -v redis-server >/dev/null || die "redis-server is not on PATH; run: $0 install"
    server_start redis "$1" "${REDIS_START_TIMEOUT:-10}" redis launch probe
}

cmd_stop() { server_stop redis "$1"; }

case "${1:-}" in
    install) [[ $# -eq 1 ]] || usage; cmd_install ;;
    start) [[ $# -eq 2 ]] || usage; cmd_start "$2" ;;
    stop) [[ $# -eq 2 ]] || usage; cmd_stop "$2" ;;
    *) usage ;;
esac
