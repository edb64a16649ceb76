#!/usr/bin/env bash
# fetch.sh — download a pinned Apache Kafka release (jars only) from Maven Central.
#
# Usage: scripts/kafka/fetch.sh [VERSION | 3]
#
# Without an argument it fetches the pinned release (KAFKA_VERSION below);
# "3" fetches the pinned Kafka 3.x release (KAFKA3_VERSION), any other
# argument that exact release.
#
# Resolves scripts/kafka/pom.xml with Maven and copies every runtime jar into
#   <repo>/.cache/kafka/<VERSION>/libs
# a flat directory like the libs/ folder of a Kafka binary release. It holds
# the broker (kafka.Kafka), the storage tool (kafka.tools.StorageTool), the
# Log4j 2 logging binding and MirrorMaker 2 (connect-mirror + connect-runtime,
# main class org.apache.kafka.connect.mirror.MirrorMaker): run any of them with
#   java -cp "$LIBS/*" <main class> ...
#
# Maven uses a private local repository in <repo>/.cache/m2, so nothing outside
# the repository's git-ignored .cache/ is touched. The run is idempotent: when
# the libs directory is complete it returns at once. Progress goes to stderr;
# the last (only) line on stdout is the libs directory.
#
# Needs: java (17+) and mvn on PATH. scripts/test.sh installs them if missing.
set -euo pipefail

# Pinned Kafka release. Keep in step with KafkaVersion in test/kafkatest.
KAFKA_VERSION=4.3.1
# The Kafka 3.x release the exactly-once mode is also tested against (the
# transaction protocol before KIP-890): scripts/kafka/fetch.sh 3.
# Keep in step with Kafka3Version in test/kafkatest.
KAFKA3_VERSION=3.9.2

case "${1:-}" in
"") ;;
3) KAFKA_VERSION=$KAFKA3_VERSION ;;
*) KAFKA_VERSION=$1 ;;
esac

log() { printf 'fetch.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ "$KAFKA_VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "version '$KAFKA_VERSION' is not MAJOR.MINOR.PATCH"

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/../.." && pwd)
cache="$repo_root/.cache"
dest="$cache/kafka/$KAFKA_VERSION"
libs="$dest/libs"
marker="$dest/.complete"

# is_complete reports whether a previous run finished: the marker is written
# only after every jar was copied and checked.
is_complete() {
	[[ -f "$marker" && -f "$libs/kafka_2.13-$KAFKA_VERSION.jar" ]]
}

if is_complete; then
	printf '%s\n' "$libs"
	exit 0
fi

command -v mvn >/dev/null 2>&1 || die "mvn not found on PATH (Debian: apt-get install maven)"
command -v java >/dev/null 2>&1 || die "java not found on PATH (Debian: apt-get install openjdk-17-jdk-headless)"

mkdir -p "$dest"

# Serialize concurrent runs (e.g. two test packages or kafka.sh calls at once).
if command -v flock >/dev/null 2>&1; then
	exec 9>"$dest/.lock"
	flock 9
	if is_complete; then
		printf '%s\n' "$libs"
		exit 0
	fi
fi

staging=$(mktemp -d "$dest/libs.tmp.XXXXXX")
trap 'rm -rf "$staging"' EXIT

# -U: retry artifacts that an earlier, failed run recorded as missing.
# sed strips the colour codes that Maven 3.8 prints even in batch mode.
log "downloading Apache Kafka $KAFKA_VERSION and MirrorMaker 2 jars from Maven Central (first run only; takes a minute or two)"
if ! mvn -B -q -U -Dstyle.color=never \
	-f "$script_dir/pom.xml" \
	-Dmaven.repo.local="$cache/m2" \
	-Dkafka.version="$KAFKA_VERSION" \
	-DoutputDirectory="$staging" \
	-DincludeScope=runtime \
	dependency:copy-dependencies 2>&1 | sed $'s/\x1b\\[[0-9;]*m//g' >&2; then
	die "maven could not resolve Apache Kafka $KAFKA_VERSION (is Maven Central reachable?)"
fi

# Sanity checks: the jars the harness and the benchmarks start from.
for jar in "kafka_2.13-$KAFKA_VERSION.jar" "kafka-clients-$KAFKA_VERSION.jar" \
	"kafka-storage-$KAFKA_VERSION.jar" "connect-mirror-$KAFKA_VERSION.jar" \
	"connect-runtime-$KAFKA_VERSION.jar"; do
	[[ -f "$staging/$jar" ]] || die "expected $jar in the downloaded jars, not found"
done
compgen -G "$staging/log4j-slf4j-impl-*.jar" >/dev/null || die "no Log4j 2 SLF4J binding among the downloaded jars"

rm -rf "$libs"
mv "$staging" "$libs"
trap - EXIT
printf '%s\n' "$KAFKA_VERSION" >"$marker"
log "$(find "$libs" -name '*.jar' | wc -l) jars in $libs"
printf '%s\n' "$libs"
