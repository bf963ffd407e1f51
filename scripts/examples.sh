#!/usr/bin/env bash
# The client examples in examples/ (tests/client_examples.rs runs them
# against a gateway and checks what they print).
#
#   scripts/examples.sh install   Python: .venv-examples/ with grpcio and grpcio-tools from PyPI,
#                                 and the stubs generated from proto/ into examples/python/gen/;
#                                 TypeScript: `npm ci` (the npm registry) and `tsc` in
#                                 examples/typescript/ (dist/client.js)
#
# Environment: PYTHON (default python3), EXAMPLES_VENV (default <repo>/.venv-examples).
set -euo pipefail

GRPCIO_SPEC="grpcio==1.85.3 grpcio-tools==1.85.1"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EXAMPLES_VENV:-${ROOT}/.venv-examples}"
PYTHON="${PYTHON:-python3}"
MARKER="${VENV}/.examples-installed"

die() { echo "examples.sh: $*" >&2; exit 1; }

cmd_install() {
    if [[ ! -x "${VENV}/bin/python" || ! -f "${MARKER}" || "$(cat "${MARKER}")" != "${GRPCIO_SPEC}" ]]; then
        [[ -x "${VENV}/bin/python" ]] || "${PYTHON}" -m venv "${VENV}" || die "python3 -m venv ${VENV} failed"
        # shellcheck disable=SC2086
        "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check ${GRPCIO_SPEC} \
            || die "pip install ${GRPCIO_SPEC} failed"
        printf '%s\n' "${GRPCIO_SPEC}" >"${MARKER}"
    fi
    # Stubs from the proto as it is now, every time.
    local gen="${ROOT}/examples/python/gen"
    rm -rf "${gen}" && mkdir -p "${gen}"
    "${VENV}/bin/python" -m grpc_tools.protoc -I "${ROOT}/proto" \
        --python_out="${gen}" --grpc_python_out="${gen}" partnerevents/v1/partner_events.proto \
        || die "generating the Python stubs failed"

    command -v npm >/dev/null || die "npm is missing (Debian: apt-get install npm)"
    (cd "${ROOT}/examples/typescript" \
        && npm ci --no-audit --no-fund --silent \
        && npm run --silent build) || die "building examples/typescript failed"
}

case "${1:-}" in
    install) cmd_install ;;
    *) echo "usage: $0 install" >&2; exit 2 ;;
esac
