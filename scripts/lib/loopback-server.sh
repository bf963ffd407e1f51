# Sourced by scripts/moto.sh and scripts/redis.sh: a test server on a free
# 127.0.0.1 port, started in the background and stopped again. The caller
# defines `die MESSAGE...`.

# A port on 127.0.0.1 that nothing listens on now. A server that finds it
# taken by the time it binds exits, and server_start tries another.
free_port() {
    local port
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
            echo "${port}"
            return 0
        fi
    done
    die "found no free port on 127.0.0.1"
}

# server_start NAME DIR TIMEOUT SCHEME LAUNCH PROBE
#   Starts `LAUNCH PORT DIR` (a function that execs the server in the
#   foreground) in the background, ignoring SIGHUP, output in DIR/NAME.log,
#   stdin from /dev/null (a caller capturing our output is not held open);
#   waits up to TIMEOUT seconds for `PROBE URL PORT` to succeed, trying up to
#   three ports; writes DIR/NAME.pid and DIR/NAME.url and prints the URL
#   (SCHEME://127.0.0.1:PORT). Exits 1 with the log when it never answers.
server_start() {
    local name="$1" dir="$2" timeout="$3" scheme="$4" launch="$5" probe="$6"
    mkdir -p "${dir}"
    dir="$(cd "${dir}" && pwd)"
    if [[ -f "${dir}/${name}.pid" ]] && kill -0 "$(cat "${dir}/${name}.pid")" 2>/dev/null; then
        die "a ${name} server is already running for ${dir} (pid $(cat "${dir}/${name}.pid"))"
    fi
    rm -f "${dir}/${name}.url" "${dir}/${name}.pid"

    local port url pid deadline
    for _ in 1 2 3; do
        port="$(free_port)"
        url="${scheme}://127.0.0.1:${port}"
        (trap '' HUP; "${launch}" "${port}" "${dir}") >"${dir}/${name}.log" 2>&1 </dev/null &
        pid=$!
        deadline=$((SECONDS + timeout))
        while ((SECONDS < deadline)); do
            if ! kill -0 "${pid}" 2>/dev/null; then
                break # exited (port taken in the meantime?): retry with another port
            fi
            if "${probe}" "${url}" "${port}"; then
                echo "${pid}" >"${dir}/${name}.pid"
                echo "${url}" >"${dir}/${name}.url"
                echo "${url}"
                return 0
            fi
            sleep 0.1
        done
        kill "${pid}" 2>/dev/null || true
        wait "${pid}" 2>/dev/null || true
        if ((SECONDS >= deadline)); then
            break
        fi
    done
    echo "${name}: the server did not come up; log follows:" >&2
    cat "${dir}/${name}.log" >&2 || true
    exit 1
}

# server_stop NAME DIR: stops the server `server_start NAME DIR` started
# (SIGTERM, then SIGKILL after 5 s).
server_stop() {
    local name="$1" dir="$2" pid
    [[ -f "${dir}/${name}.pid" ]] || return 0
    pid="$(cat "${dir}/${name}.pid")"
    if kill -0 "${pid}" 2>/dev/null; then
        kill "${pid}" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "${pid}" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "${pid}" 2>/dev/null || true
    fi
    rm -f "${dir}/${name}.pid" "${dir}/${name}.url"
}
