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

# shellcheck source=scripts/lib/loopback-server.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/loopback-server.sh"

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

# Runs moto_server on 127.0.0.1:$1 in the foreground.
launch() { exec "${VENV}/bin/moto_server" -H 127.0.0.1 -p "$1"; }

cmd_start() {
    [[ -x "${VENV}/bin/moto_server" ]] || die "moto is not installed; run: $0 install"
    server_start moto "$1" "${MOTO_START_TIMEOUT:-30}" http launch probe
}

cmd_stop() { server_stop moto "$1"; }

case "${1:-}" in
    install) [[ $# -eq 1 ]] || usage; cmd_install ;;
    start) [[ $# -eq 2 ]] || usage; cmd_start "$2" ;;
    stop) [[ $# -eq 2 ]] || usage; cmd_stop "$2" ;;
    *) usage ;;
esac
