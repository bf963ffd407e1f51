#!/usr/bin/env bash
# buf for the public API (proto/): lint, and breaking-change detection.
#
#   scripts/buf.sh install    install @bufbuild/buf from the npm registry into .buf/
#   scripts/buf.sh lint       buf lint (proto/buf.yaml: STANDARD, with the exceptions it gives)
#   scripts/buf.sh breaking   buf breaking against the proto as of the commit in proto/BASELINE
#                             (the last released API; moving it is a deliberate commit)
#
# Environment: BUF_DIR (default <repo>/.buf).
set -euo pipefail

BUF_VERSION="1.75.0"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${BUF_DIR:-${ROOT}/.buf}"
BUF="${DIR}/node_modules/.bin/buf"

die() { echo "buf.sh: $*" >&2; exit 1; }

cmd_install() {
    if [[ -x "${BUF}" && "$("${BUF}" --version 2>/dev/null)" == "${BUF_VERSION}" ]]; then
        return 0
    fi
    command -v npm >/dev/null || die "npm is missing (Debian: apt-get install npm)"
    mkdir -p "${DIR}"
    npm install --prefix "${DIR}" --no-save --no-audit --no-fund --silent "@bufbuild/buf@${BUF_VERSION}" \
        || die "npm install @bufbuild/buf@${BUF_VERSION} failed"
    [[ -x "${BUF}" ]] || die "buf missing after install"
}

cmd_lint() {
    cmd_install
    (cd "${ROOT}" && "${BUF}" lint proto)
}

cmd_breaking() {
    cmd_install
    local base
    base="$(tr -d '[:space:]' <"${ROOT}/proto/BASELINE")"
    git -C "${ROOT}" cat-file -e "${base}^{commit}" 2>/dev/null \
        || die "proto/BASELINE names ${base}, which this clone does not have (a shallow clone?)"
    (cd "${ROOT}" && "${BUF}" breaking proto --against ".git#ref=${base},subdir=proto")
}

case "${1:-}" in
    install) cmd_install ;;
    lint) cmd_lint ;;
    breaking) cmd_breaking ;;
    *) echo "usage: $0 install | lint | breaking" >&2; exit 2 ;;
esac
