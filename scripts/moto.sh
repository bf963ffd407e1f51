#!/usr/bin/env bash
# Local moto (AWS emulator) for the integration tests.
#
#   scripts/moto.sh install      create .venv-moto/ at the repo root and install moto[server]
#   scripts/moto.sh start DIR    start moto_server on 127.0.0.1:<free port>; writes DIR/moto.url,
#                                DIR/moto.pid, DIR/moto.log and prints the URL
#   scripts/moto.sh stop DIR     stop the server started with `start DIR`
#
# Environment: PYTHON (default python3), MOTO_VENV (default <repo>/.venv-moto),
#              MOTO_START_TIMEOUT seconds (default 30).
set -euo pipefail

MOTO_VERSION="5.2.5"
MOTO_SPEC="moto[server]==${MOTO_VERSION}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MOTO_VENV:-${ROOT}/.venv-moto}"
PYTHON="${PYTHON:-python3}"
MARKER="${VENV}/.moto-installed"

die() { echo "moto.sh: $*" >&2; exit 1; }

usage() {
    echo "usage: $0 install | start DIR | stop DIR" >&2
    exit 2
}

cmd_install() {
    if [[ -x "${VENV}/bin/moto_server" && -f "${MARKER}" && "$(cat "${MARKER}")" == "${MOTO_SPEC}" ]]; then
        return 0
    fi
    if [[ ! -x "${VENV}/bin/python" ]]; then
        "${PYTHON}" -m venv "${VENV}" || die "python3 -m venv ${VENV} failed"
    fi
    "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check "${MOTO_SPEC}" \
        || die "pip install ${MOTO_SPEC} failed"
    [[ -x "${VENV}/bin/moto_server" ]] || die "moto_server missing after install"
    printf '%s\n' "${MOTO_SPEC}" >"${MARKER}"
}

free_port() {
    "${VENV}/bin/python" - <<'EOF'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

# Exit 0 when something answers HTTP at $1 (any status, moto answers / with 200).
probe() {
    "${VENV}/bin/python" - "$1" <<'EOF'
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1] + "/moto-api/", timeout=1)
except urllib.error.HTTPError:
    pass
except Exception:
    sys.exit(1)
EOF
}

cmd_start() {
    local dir="$1"
    [[ -x "${VENV}/bin/moto_server" ]] || die "moto is not installed; run: $0 install"
    mkdir -p "${dir}"
    dir="$(cd "${dir}" && pwd)"
    if [[ -f "${dir}/moto.pid" ]] && kill -0 "$(cat "${dir}/moto.pid")" 2>/dev/null; then
        die "a moto server is already running for ${dir} (pid $(cat "${dir}/moto.pid"))"
    fi
    rm -f "${dir}/moto.url" "${dir}/moto.pid"

    local timeout="${MOTO_START_TIMEOUT:-30}" port url pid deadline
    for _ in 1 2 3; do
        port="$(free_port)"
        url="http://127.0.0.1:${port}"
        # Output to the log and stdin from /dev/null: a caller capturing our output is not held open.
        nohup "${VENV}/bin/moto_server" -H 127.0.0.1 -p "${port}" >"${dir}/moto.log" 2>&1 </dev/null &
        pid=$!
        deadline=$((SECONDS + timeout))
        while ((SECONDS < deadline)); do
            if ! kill -0 "${pid}" 2>/dev/null; then
                break # died (port taken in the meantime?): retry with another port
            fi
            if probe "${url}"; then
                echo "${pid}" >"${dir}/moto.pid"
                echo "${url}" >"${dir}/moto.url"
                echo "${url}"
                return 0
            fi
            sleep 0.2
        done
        kill "${pid}" 2>/dev/null || true
        wait "${pid}" 2>/dev/null || true
        if ((SECONDS >= deadline)); then
            break
        fi
    done
    echo "moto.sh: moto_server did not come up; log follows:" >&2
    cat "${dir}/moto.log" >&2 || true
    exit 1
}

cmd_stop() {
    local dir="$1" pid i
    [[ -f "${dir}/moto.pid" ]] || return 0
    pid="$(cat "${dir}/moto.pid")"
    if kill -0 "${pid}" 2>/dev/null; then
        kill "${pid}" 2>/dev/null || true
        for i in $(seq 1 50); do
            kill -0 "${pid}" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "${pid}" 2>/dev/null || true
    fi
    rm -f "${dir}/moto.pid" "${dir}/moto.url"
}

case "${1:-}" in
    install) [[ $# -eq 1 ]] || usage; cmd_install ;;
    start) [[ $# -eq 2 ]] || usage; cmd_start "$2" ;;
    stop) [[ $# -eq 2 ]] || usage; cmd_stop "$2" ;;
    *) usage ;;
esac
