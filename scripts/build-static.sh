#!/usr/bin/env bash
# build-static.sh — builds the static kmirror binary exactly as the container
# image does (deploy/Dockerfile), without a container engine:
#
#   scripts/build-static.sh [OUT_DIR]          # default: bin/
#   VERSION=v1.2.3 scripts/build-static.sh dist/
#   GOOS=linux GOARCH=arm64 scripts/build-static.sh dist/arm64/
#
# VERSION defaults to `git describe --tags --dirty` when the checkout has a
# tag, else "dev"; COMMIT to `git rev-parse HEAD`, with "-dirty" when tracked
# files have uncommitted changes, else "unknown". The binary is linked
# statically (CGO_ENABLED=0), has no symbol table or debug information, and
# no file system paths of the build machine. Prints its path last.
set -euo pipefail

out=${1:-bin}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -z "${VERSION:-}" ]]; then
	VERSION=$(git describe --tags --dirty 2>/dev/null || echo dev)
fi
if [[ -z "${COMMIT:-}" ]]; then
	if COMMIT=$(git rev-parse HEAD 2>/dev/null); then
		if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
			COMMIT+=-dirty
		fi
	else
		COMMIT=unknown
	fi
fi
export VERSION COMMIT

# The same command as the RUN step of deploy/Dockerfile.
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" -o "$out/kmirror" ./cmd/kmirror

echo "$out/kmirror"
