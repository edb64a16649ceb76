#!/usr/bin/env bash
# test.sh — the one command that runs kmirror's whole test suite, on a fresh
# machine too (CI runs it through .ci/run).
#
#   1. installs what is missing, with apt-get: kcat; a JDK (17+) and Maven
#      for the real Kafka brokers; Chromium for the dashboard's browser test;
#   2. downloads the pinned Apache Kafka jars (scripts/kafka/fetch.sh; cached
#      in .cache/, so later runs skip it);
#   3. runs go vet ./... and golangci-lint (.golangci.yml; the pinned
#      version is built from the Go module proxy into .cache/bin once);
#   4. lints and renders the Helm chart (deploy/helm/kmirror) with a pinned
#      helm, also built into .cache/bin once, and validates the manifests
#      offline against the Kubernetes API types (deploy/helm/validate);
#   5. checks the Prometheus alerting rules (deploy/monitoring) with promtool
#      (from Debian's prometheus package, unpacked into .cache/bin once):
#      syntax and unit tests;
#   6. runs go test ./... with the real-Kafka integration tests required:
#      KMIRROR_REQUIRE_KAFKA=1 turns their skip into a failure.
#
# Works from any directory. Exits with go test's status; the last line says
# "test.sh: N passed, N failed, N skipped" (tests and subtests).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }
die() {
	printf 'test.sh: error: %s\n' "$*" >&2
	exit 1
}

apt_updated=false

# apt_install PKG...: installs Debian packages, updating the index once.
apt_install() {
	local sudo=()
	if [[ $(id -u) -ne 0 ]]; then
		command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install: $*"
		sudo=(sudo)
	fi
	command -v apt-get >/dev/null 2>&1 || die "no apt-get; install by hand: $*"
	if ! $apt_updated; then
		"${sudo[@]}" apt-get update -qq
		apt_updated=true
	fi
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "$@"
}

# java_major: the running Java's feature version (8, 11, 17, ...).
java_major() {
	java -XshowSettings:properties -version 2>&1 |
		sed -n 's/^ *java\.specification\.version = \(1\.\)\{0,1\}\([0-9]*\).*/\2/p'
}

step "tools"
command -v go >/dev/null 2>&1 || die "no Go toolchain on PATH"
missing=()
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v chromium >/dev/null 2>&1 || missing+=(chromium) # the dashboard test (test/e2e/dashboard_test.go)
if ((${#missing[@]} > 0)); then
	echo "installing: ${missing[*]}"
	apt_install "${missing[@]}"
fi
major=$(java_major)
if [[ -z "$major" ]] || ((major < 17)); then
	die "Kafka 4 needs Java 17 or newer; java on PATH is '${major:-unknown}'"
fi
echo "go: $(go version)"
echo "java: $major; $(mvn -v 2>/dev/null | head -n 1 | sed 's/\x1b\[[0-9;]*m//g'); kcat $(kcat -V 2>&1 | sed -n 's/^Version \([^ ]*\).*/\1/p' | head -n 1)"

step "Apache Kafka jars (scripts/kafka/fetch.sh)"
libs=$(scripts/kafka/fetch.sh | tail -n 1)
[[ -d "$libs" ]] || die "fetch.sh printed '$libs', not a directory"
echo "$libs"
export KMIRROR_KAFKA_LIBS="$libs"
# The pinned Kafka 3.x release too: the exactly-once mode is also tested
# against the transaction protocol from before KIP-890 (test/e2e/kafka3_test.go).
libs3=$(scripts/kafka/fetch.sh 3 | tail -n 1)
[[ -d "$libs3" ]] || die "fetch.sh 3 printed '$libs3', not a directory"
echo "$libs3"
export KMIRROR_KAFKA3_LIBS="$libs3"
export KMIRROR_REQUIRE_KAFKA=1

step "go vet ./..."
go vet ./... || {
	echo "test.sh: FAIL (go vet)"
	echo "test.sh: 0 passed, 1 failed"
	exit 1
}

# Pinned golangci-lint, built once into the git-ignored .cache/bin.
GOLANGCI_LINT_VERSION=v2.15.0
lint="$PWD/.cache/bin/golangci-lint"
step "golangci-lint $GOLANGCI_LINT_VERSION (.golangci.yml)"
if ! "$lint" version 2>/dev/null | grep -qF "version ${GOLANGCI_LINT_VERSION#v} "; then
	echo "building golangci-lint $GOLANGCI_LINT_VERSION into .cache/bin (first run only; a few minutes)"
	GOBIN="$PWD/.cache/bin" go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_LINT_VERSION"
fi
"$lint" run ./... || {
	echo "test.sh: FAIL (golangci-lint)"
	echo "test.sh: 0 passed, 1 failed"
	exit 1
}

# The Helm chart: pinned helm, built once into .cache/bin; the rendered
# manifests are validated offline by deploy/helm/validate (a module of its
# own, so the main module needs no Kubernetes packages), whose tests also
# render the chart's other cases and check that mistakes are caught.
HELM_VERSION=v3.22.0
helm="$PWD/.cache/bin/helm"
step "Helm chart: helm $HELM_VERSION lint and template, manifests validated; Dockerfile parsed (deploy/helm/validate)"
if ! go version -m "$helm" 2>/dev/null | grep -qE "^[[:space:]]+mod[[:space:]]+helm.sh/helm/v3[[:space:]]+$HELM_VERSION[[:space:]]"; then
	echo "building helm $HELM_VERSION into .cache/bin (first run only; about two minutes)"
	GOBIN="$PWD/.cache/bin" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
chart_check() {
	local chart=deploy/helm/kmirror minimal=deploy/helm/validate/testdata/minimal-values.yaml
	local dir
	dir=$(mktemp -d)
	"$helm" lint --strict "$chart" -f "$minimal" &&
		"$helm" lint --strict "$chart" -f "$chart/values-full.yaml" &&
		"$helm" template kmirror "$chart" --namespace kafka -f "$minimal" >"$dir/default.yaml" &&
		"$helm" template kmirror "$chart" --namespace kafka -f "$chart/values-full.yaml" >"$dir/full.yaml" &&
		(cd deploy/helm/validate && go vet ./... &&
			echo "default values (values.yaml + a configuration):" && go run . "$dir/default.yaml" &&
			echo "values-full.yaml (every option on):" && go run . "$dir/full.yaml" &&
			HELM="$helm" go test -count=1 -v ./... | grep -E '^(--- |ok|FAIL)|_test.go:')
	local status=$?
	rm -rf "$dir"
	return $status
}
chart_check || {
	echo "test.sh: FAIL (Helm chart)"
	echo "test.sh: 0 passed, 1 failed"
	exit 1
}

# The Prometheus alerting rules: promtool checks their syntax and runs their
# unit tests (deploy/monitoring/kmirror-alerts_test.yaml). promtool is taken
# from Debian's prometheus package, unpacked into .cache/bin without
# installing it (nothing runs as a service); where there is no apt, it is
# built from the Go module proxy (ten minutes or more on two cores). The Go
# tests of deploy/monitoring check that the rules and the Grafana dashboard
# name only metrics kmirror exports.
promtool="$PWD/.cache/bin/promtool"
step "Prometheus rules: promtool check rules and test rules (deploy/monitoring)"
if [[ ! -x "$promtool" ]]; then
	mkdir -p .cache/bin
	if command -v apt-get >/dev/null 2>&1; then
		debdir=$(mktemp -d)
		if ! (cd "$debdir" && apt-get download prometheus >/dev/null 2>&1); then
			sudo=()
			[[ $(id -u) -ne 0 ]] && sudo=(sudo)
			"${sudo[@]}" apt-get update -qq
			apt_updated=true
			(cd "$debdir" && apt-get download prometheus >/dev/null)
		fi
		dpkg-deb -x "$debdir"/prometheus_*.deb "$debdir/x"
		cp "$debdir/x/usr/bin/promtool" "$promtool"
		rm -rf "$debdir"
	else
		echo "building promtool into .cache/bin (first run only; ten minutes or more on two cores)"
		GOBIN="$PWD/.cache/bin" go install github.com/prometheus/prometheus/cmd/promtool@v0.316.0
	fi
fi
"$promtool" --version | head -1
(cd deploy/monitoring && "$promtool" check rules kmirror-alerts.yaml && "$promtool" test rules kmirror-alerts_test.yaml) || {
	echo "test.sh: FAIL (Prometheus rules)"
	echo "test.sh: 0 passed, 1 failed"
	exit 1
}

# test/e2e, the longest package, runs 4 of its parallel tests at once
# (its TestMain's default, as they mostly wait on brokers); a -parallel
# flag here would override it.
step "go test -count=1 -timeout 35m -v ./..."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
go test -count=1 -timeout 35m -v ./... 2>&1 | tee "$out" || status=$?

passed=$(grep -cE '^ *--- PASS: ' "$out" || true)
skipped=$(grep -cE '^ *--- SKIP: ' "$out" || true)
# Failed tests, plus packages that failed without a test to blame (build
# errors, timeouts, panics outside a test).
failed=$(grep -cE '^ *--- FAIL: |^panic: test timed out|^FAIL[[:space:]]+[^[:space:]]+[[:space:]]+\[' "$out" || true)
if ((status != 0 && failed == 0)); then
	failed=1
fi
echo
if ((status == 0)); then
	echo "test.sh: all tests passed (go vet + go test ./..., real Kafka from $libs)"
else
	echo "test.sh: FAILED (go test exit status $status)"
fi
echo "test.sh: $passed passed, $failed failed, $skipped skipped"
exit "$status"
