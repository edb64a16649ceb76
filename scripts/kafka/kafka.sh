#!/usr/bin/env bash
# kafka.sh — run local single-node Apache Kafka clusters (KRaft, combined
# broker + controller) for people and benchmarks.
#
# Usage:
#   scripts/kafka/kafka.sh start NAME PORT  start cluster NAME on 127.0.0.1:PORT, wait until it
#                                           serves, print its bootstrap address (last stdout line)
#   scripts/kafka/kafka.sh stop NAME        stop it gracefully (SIGTERM, SIGKILL after 30 s)
#   scripts/kafka/kafka.sh stop-all         stop every cluster started by this script
#   scripts/kafka/kafka.sh status           list clusters and whether they run
#
# Each cluster lives in <repo>/.cache/clusters/NAME: server.properties,
# log4j2.properties, kafka.log (broker log, INFO), pid and data/. Data is kept
# across stop and start; remove the directory to start afresh. The controller
# listens on 127.0.0.1:PORT+1. Jars come from scripts/kafka/fetch.sh.
#
# Environment:
#   KAFKA_HEAP_OPTS             JVM heap (default: -Xms1g -Xmx1g, as Kafka's own scripts)
#   KAFKA_JVM_PERFORMANCE_OPTS  GC and JIT flags (default: G1, as Kafka's own scripts)
#   KAFKA_CONTROLLER_PORT       controller listener port (default: PORT+1)
#   KAFKA_EXTRA_PROPERTIES      lines appended to server.properties (later keys win)
#   KAFKA_START_TIMEOUT         seconds to wait for the broker (default: 60)
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/../.." && pwd)
clusters="$repo_root/.cache/clusters"

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
	sed -n '5,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

# cluster_dir NAME: the directory of cluster NAME (validating the name).
cluster_dir() {
	[[ "$1" =~ ^[A-Za-z0-9._-]+$ && "$1" != .* ]] || die "bad cluster name '$1' (letters, digits, . _ -)"
	printf '%s\n' "$clusters/$1"
}

# running_pid DIR: prints the pid of the cluster's JVM if it runs. The pid
# must still be a process started on DIR's config, not a recycled id.
running_pid() {
	local dir=$1 pid
	[[ -f "$dir/pid" ]] || return 1
	pid=$(<"$dir/pid")
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	ps -o args= -p "$pid" 2>/dev/null | grep -qF -- "$dir/server.properties" || return 1
	printf '%s\n' "$pid"
}

# port_open PORT: whether something accepts connections on 127.0.0.1:PORT.
port_open() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# configured_port DIR: the client port in DIR's server.properties.
configured_port() {
	sed -n 's#^advertised.listeners=PLAINTEXT://127.0.0.1:\([0-9]*\)$#\1#p' "$1/server.properties" 2>/dev/null
}

# new_cluster_id: 16 random bytes in Kafka's Uuid text form (URL-safe
# base64, no padding), not starting with '-'.
new_cluster_id() {
	local id
	while :; do
		id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
		[[ "$id" != -* ]] && break
	done
	printf '%s\n' "$id"
}

# write_config DIR PORT CPORT: server.properties and log4j2.properties, the
# same single-node settings as the test harness (test/kafkaproc), plus
# KAFKA_EXTRA_PROPERTIES.
write_config() {
	local dir=$1 port=$2 cport=$3
	(cd "$repo_root" && go run ./test/kafkaproc/serverprops -port "$port" -controller-port "$cport" -dir "$dir") ||
		die "writing the broker configuration in $dir"
	if [[ -n "${KAFKA_EXTRA_PROPERTIES:-}" ]]; then
		printf '# KAFKA_EXTRA_PROPERTIES\n%s\n' "$KAFKA_EXTRA_PROPERTIES" >>"$dir/server.properties"
	fi
}

# java_opts DIR LIBS: sets JAVA_OPTS to the JVM flags and classpath for the
# cluster in DIR.
java_opts() {
	local dir=$1 libs=$2 heap perf
	read -r -a heap <<<"${KAFKA_HEAP_OPTS:--Xms1g -Xmx1g}"
	read -r -a perf <<<"${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent}"
	JAVA_OPTS=("${heap[@]}" "${perf[@]}" -Djava.awt.headless=true
		-Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$libs/*")
}

cmd_start() {
	[[ $# -eq 2 ]] || usage
	local name=$1 port=$2 dir cport pid libs offset deadline
	local -a JAVA_OPTS
	dir=$(cluster_dir "$name")
	if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65534)); then
		die "bad port '$port'"
	fi
	cport=${KAFKA_CONTROLLER_PORT:-$((port + 1))}

	if pid=$(running_pid "$dir"); then
		[[ "$(configured_port "$dir")" == "$port" ]] ||
			die "cluster $name already runs (pid $pid) on port $(configured_port "$dir"); stop it first"
		log "cluster $name already running (pid $pid)"
		printf '127.0.0.1:%s\n' "$port"
		return
	fi
	port_open "$port" && die "port $port is in use"
	port_open "$cport" && die "controller port $cport is in use (set KAFKA_CONTROLLER_PORT)"
	command -v java >/dev/null 2>&1 || die "java (17+) not found on PATH"

	libs=$("$script_dir/fetch.sh" | tail -n 1)
	mkdir -p "$dir/data"
	write_config "$dir" "$port" "$cport"
	java_opts "$dir" "$libs"

	if [[ ! -f "$dir/data/meta.properties" ]]; then
		log "formatting storage of cluster $name"
		java "${JAVA_OPTS[@]}" kafka.tools.StorageTool format \
			--cluster-id "$(new_cluster_id)" --config "$dir/server.properties" >>"$dir/kafka.log" 2>&1 ||
			die "formatting storage failed; see $dir/kafka.log"
	fi

	offset=$(stat -c %s "$dir/kafka.log" 2>/dev/null || echo 0)
	printf '=== kafka.sh: starting %s on 127.0.0.1:%s (%s) ===\n' "$name" "$port" "$(date -Is)" >>"$dir/kafka.log"
	# setsid: the JVM leads its own session and process group, so that it
	# outlives this shell and stop can signal the whole group.
	setsid java "${JAVA_OPTS[@]}" kafka.Kafka "$dir/server.properties" \
		</dev/null >>"$dir/kafka.log" 2>&1 &
	pid=$!
	printf '%s\n' "$pid" >"$dir/pid"

	deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-60}))
	until port_open "$port" && tail -c "+$((offset + 1))" "$dir/kafka.log" | grep -q 'Kafka Server started'; do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -n 30 "$dir/kafka.log" >&2
			rm -f "$dir/pid"
			die "cluster $name exited while starting; log: $dir/kafka.log"
		fi
		if ((SECONDS >= deadline)); then
			tail -n 30 "$dir/kafka.log" >&2
			stop_dir "$dir"
			die "cluster $name not ready after ${KAFKA_START_TIMEOUT:-60}s; log: $dir/kafka.log"
		fi
		sleep 0.2
	done
	log "cluster $name running (pid $pid, data $dir)"
	printf '127.0.0.1:%s\n' "$port"
}

# stop_dir DIR: stops the cluster in DIR if it runs.
stop_dir() {
	local dir=$1 pid deadline
	if ! pid=$(running_pid "$dir"); then
		rm -f "$dir/pid"
		return 1
	fi
	kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
	deadline=$((SECONDS + 30))
	while kill -0 "$pid" 2>/dev/null; do
		if ((SECONDS >= deadline)); then
			log "$(basename "$dir") did not stop in 30s; killing it"
			kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
		fi
		sleep 0.2
	done
	rm -f "$dir/pid"
}

cmd_stop() {
	[[ $# -eq 1 ]] || usage
	local dir
	dir=$(cluster_dir "$1")
	if stop_dir "$dir"; then
		log "cluster $1 stopped"
	else
		log "cluster $1 is not running"
	fi
}

cmd_stop_all() {
	[[ $# -eq 0 ]] || usage
	local dir
	for dir in "$clusters"/*/; do
		[[ -d "$dir" ]] || continue
		dir=${dir%/}
		if stop_dir "$dir"; then
			log "cluster $(basename "$dir") stopped"
		fi
	done
}

cmd_status() {
	[[ $# -eq 0 ]] || usage
	local dir pid
	for dir in "$clusters"/*/; do
		[[ -d "$dir" ]] || continue
		dir=${dir%/}
		if pid=$(running_pid "$dir"); then
			printf '%s\trunning\t127.0.0.1:%s\tpid %s\n' "$(basename "$dir")" "$(configured_port "$dir")" "$pid"
		else
			printf '%s\tstopped\n' "$(basename "$dir")"
		fi
	done
}

main() {
	[[ $# -ge 1 ]] || usage
	local cmd=$1
	shift
	case "$cmd" in
	start) cmd_start "$@" ;;
	stop) cmd_stop "$@" ;;
	stop-all) cmd_stop_all "$@" ;;
	status) cmd_status "$@" ;;
	-h | --help | help) usage ;;
	*) usage ;;
	esac
}

main "$@"
