package main

import (
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Replicator kinds. The -eos kinds are the same replicators in their
// exactly-once modes: kmirror with exactly_once: true, MM2 with
// exactly-once source support (KIP-618) enabled on the target.
const (
	toolKmirror    = "kmirror"
	toolKmirrorEOS = "kmirror-eos"
	toolMM2        = "MM2"
	toolMM2EOS     = "MM2-eos"
	toolPipe       = "pipe"
)

// allTools are the replicators in the order they run in a scenario.
var allTools = []string{toolKmirror, toolKmirrorEOS, toolMM2, toolMM2EOS, toolPipe}

// replicators are the tools of the scenarios the bare pipe has no part in.
var replicators = []string{toolKmirror, toolKmirrorEOS, toolMM2, toolMM2EOS}

// eos reports whether tool writes the target in transactions: its copies
// are counted as a read_committed consumer sees them.
func eos(tool string) bool { return tool == toolKmirrorEOS || tool == toolMM2EOS }

// baseTool is the replicator a tool runs: kmirror, MM2 or the pipe.
func baseTool(tool string) string {
	switch tool {
	case toolKmirrorEOS:
		return toolKmirror
	case toolMM2EOS:
		return toolMM2
	}
	return tool
}

// canonicalTool returns the tool named name, ignoring case.
func canonicalTool(name string) (string, bool) {
	for _, t := range allTools {
		if strings.EqualFold(strings.TrimSpace(name), t) {
			return t, true
		}
	}
	return "", false
}

// Settings every replicator shares, kmirror's defaults: they are written
// into each tool's own configuration below.
const (
	batchBytes        = 1 << 20  // producer batch size
	lingerMs          = 5        // producer linger
	fetchMaxBytes     = 50 << 20 // consumer fetch size
	fetchMaxPartBytes = 10 << 20 // consumer fetch size per partition
	bufferedBytes     = 256 << 20
	topicRefresh      = 5 * time.Second // new topic discovery, kmirror's default
	mm2Tasks          = 12              // MM2 tasks.max: the backlog's partition count
)

// toolRun describes one run of a replicator in one scenario.
type toolRun struct {
	// id names the run's state: kmirror's flow, MM2's internal topics, the
	// log file. Unique per run, so that every run starts fresh.
	id string
	// topics are the source topics to copy, as a regex (full match).
	topics string
	// topicList lists them, for the bare pipe, which does no discovery.
	topicList []string
	// cpuProfile, if set, is where kmirror writes its CPU profile.
	cpuProfile string
	// group, if set, is a consumer group whose offsets the run syncs to the
	// target (scenario 6): kmirror with sync_interval 1s, MM2 with
	// checkpoints and group offset sync every second. Both then read the
	// source read_committed.
	group string
	// scaleOut sets scale_out: true on the flow; instance numbers the
	// processes of one run (their configuration and log files).
	scaleOut bool
	instance int
	// eos runs the replicator in its exactly-once mode.
	eos bool
	// restPort is the port of MM2's internal REST server (exactly-once
	// mode only).
	restPort int
	// srcBootstrap and tgtBootstrap, if set, are the addresses the
	// replicator reaches the clusters at instead of the brokers' own (a
	// wanLink in the long-links scenario).
	srcBootstrap, tgtBootstrap string
	// wan gives MM2 the settings its documentation advises for links of
	// high latency (mm2WANProps).
	wan bool
	// kmirrorSet overrides kmirror's producer and consumer settings for
	// this run, over -kmirror-set.
	kmirrorSet map[string]string
}

// bootstraps are the addresses the replicator of run reaches the source
// and the target at.
func (h *harness) bootstraps(run toolRun) (src, tgt string) {
	src, tgt = h.src.b.bootstrap(), h.tgt.b.bootstrap()
	if run.srcBootstrap != "" {
		src = run.srcBootstrap
	}
	if run.tgtBootstrap != "" {
		tgt = run.tgtBootstrap
	}
	return src, tgt
}

// targetName is the name of source topic t's copy written by tool.
func targetName(tool, t string) string {
	switch baseTool(tool) {
	case toolKmirror:
		return "km." + t
	case toolMM2:
		return "source." + t // MM2's DefaultReplicationPolicy: "<source alias>."
	default:
		return "pipe." + t
	}
}

// targetNames maps each source topic to its copy by tool.
func targetNames(tool string, topics []string) map[string]string {
	m := make(map[string]string, len(topics))
	for _, t := range topics {
		m[t] = targetName(tool, t)
	}
	return m
}

// launch starts tool for run.
func (h *harness) launch(tool string, run toolRun) (*proc, error) {
	run.eos = eos(tool)
	switch baseTool(tool) {
	case toolKmirror:
		return h.launchKmirror(run)
	case toolMM2:
		return h.launchMM2(run)
	case toolPipe:
		return h.launchPipe(run)
	}
	return nil, fmt.Errorf("unknown tool %q", tool)
}

// kmirrorConfig is kmirror's YAML for run, its defaults written out.
func (h *harness) kmirrorConfig(run toolRun) string {
	groupLines, isolation := "", "read_uncommitted"
	if run.group != "" {
		groupLines = fmt.Sprintf("    groups: [\"%s\"]\n    sync_interval: 1s\n", run.group)
		isolation = "read_committed"
	}
	if run.eos {
		// exactly_once reads the source read_committed (kmirror refuses
		// read_uncommitted with it).
		groupLines += fmt.Sprintf("    exactly_once: true\n    transaction_interval: %s\n    transaction_max_bytes: %d\n",
			h.opts.kmirrorTxnInterval, h.opts.kmirrorTxnMaxBytes)
		isolation = "read_committed"
	}
	groupLines += fmt.Sprintf("    scale_out: %t\n", run.scaleOut || h.opts.kmirrorScaleOut)
	if p := h.opts.kmirrorProvenance; p != "" {
		groupLines += fmt.Sprintf("    provenance: %s\n", p)
	}
	if h.opts.kmirrorPassThrough && !run.eos {
		groupLines += "    pass_through: true\n"
	}
	src, tgt := h.bootstraps(run)
	return fmt.Sprintf(`# kmirror configuration of bench run %[1]s
clusters:
  source:
    bootstrap_servers: ["%[2]s"]
  target:
    bootstrap_servers: ["%[3]s"]
flows:
  - name: bench-%[1]s
    source: source
    target: target
    topics: ["%[4]s"]
    topic_naming: prefix
    topic_prefix: "km."
    start_from: earliest
    topic_refresh_interval: %[5]s
    progress_interval: 200ms
%[6]s%[7]shttp:
  listen: "127.0.0.1:0"
log:
  level: info
  format: text
`, run.id, src, tgt, run.topics, topicRefresh, groupLines, kmirrorClientYAML(isolation, h.opts.kmirrorSet, run.kmirrorSet))
}

// kmirrorSettable are the keys of kmirror's flow settings -kmirror-set
// may override, in the order the YAML has them.
var kmirrorSettable = []string{
	"producer.compression", "producer.linger", "producer.batch_max_bytes", "producer.max_buffered_bytes", "producer.acks",
	"consumer.fetch_max_bytes", "consumer.fetch_max_partition_bytes",
}

// kmirrorClientDefaults are the bench's values of kmirrorSettable:
// kmirror's defaults, shared with MM2 and the pipe.
func kmirrorClientDefaults() map[string]string {
	return map[string]string{
		"producer.compression":               "lz4",
		"producer.linger":                    strconv.Itoa(lingerMs) + "ms",
		"producer.batch_max_bytes":           strconv.Itoa(batchBytes),
		"producer.max_buffered_bytes":        strconv.Itoa(bufferedBytes),
		"producer.acks":                      "all",
		"consumer.fetch_max_bytes":           strconv.Itoa(fetchMaxBytes),
		"consumer.fetch_max_partition_bytes": strconv.Itoa(fetchMaxPartBytes),
	}
}

// parseKmirrorSet parses "key=value,key=value" of kmirrorSettable keys.
func parseKmirrorSet(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || v == "" {
			return nil, fmt.Errorf("%q is not key=value (value \"default\": kmirror's own default)", kv)
		}
		if !slices.Contains(kmirrorSettable, k) {
			return nil, fmt.Errorf("unknown key %q (known: %s)", k, strings.Join(kmirrorSettable, ", "))
		}
		out[k] = v
	}
	return out, nil
}

// kmirrorClientYAML is the producer and consumer part of a kmirror flow:
// the bench's values, overridden by each of sets in turn. A key set to
// "default" is left out, so that kmirror's own default applies.
func kmirrorClientYAML(isolation string, sets ...map[string]string) string {
	v := kmirrorClientDefaults()
	for _, set := range sets {
		maps.Copy(v, set)
	}
	var b strings.Builder
	section := ""
	for _, k := range kmirrorSettable {
		if v[k] == "default" {
			continue
		}
		sec, key, _ := strings.Cut(k, ".")
		if sec != section {
			section = sec
			fmt.Fprintf(&b, "    %s:\n", sec)
		}
		fmt.Fprintf(&b, "      %s: %s\n", key, v[k])
	}
	if section != "consumer" {
		b.WriteString("    consumer:\n")
	}
	fmt.Fprintf(&b, "      isolation_level: %s\n", isolation)
	return b.String()
}

func (h *harness) launchKmirror(run toolRun) (*proc, error) {
	cfg := h.kmirrorConfig(run)
	name := run.id
	if run.instance > 0 {
		name += "-" + strconv.Itoa(run.instance)
	}
	file := filepath.Join(h.env.workDir, "kmirror-"+name+".yaml")
	if err := writeFile(file, []byte(cfg)); err != nil {
		return nil, err
	}
	var env []string
	if run.cpuProfile != "" {
		env = []string{"KMIRROR_CPUPROFILE=" + run.cpuProfile}
	}
	return startProc("kmirror", filepath.Join(h.env.workDir, "kmirror-"+name+".log"), env, h.env.kmirror, "run", "--config", file)
}

// mm2Props is MirrorMaker 2's mm2.properties for run: dedicated mode, one
// flow source->target, tuned for throughput, with the same producer and
// consumer settings as kmirror.
func (h *harness) mm2Props(run toolRun) map[string]string {
	src, tgt := h.bootstraps(run)
	props := map[string]string{
		"clusters":                 "source, target",
		"source.bootstrap.servers": src,
		"target.bootstrap.servers": tgt,
		"source->target.enabled":   "true",
		"source->target.topics":    run.topics,
		"target->source.enabled":   "false",

		// Throughput: one task per partition of the backlog.
		"tasks.max": strconv.Itoa(mm2Tasks),

		// Same producer settings as kmirror: lz4, 1 MiB batches, 5 ms
		// linger; acks=all and delivery guarantees as Connect sets them.
		"target.producer.compression.type": "lz4",
		"target.producer.batch.size":       strconv.Itoa(batchBytes),
		"target.producer.linger.ms":        strconv.Itoa(lingerMs),
		"target.producer.acks":             "all",
		// Same fetch sizes as kmirror.
		"source.consumer.fetch.max.bytes":           strconv.Itoa(fetchMaxBytes),
		"source.consumer.max.partition.fetch.bytes": strconv.Itoa(fetchMaxPartBytes),

		// One broker per cluster: replication factor 1 everywhere.
		"replication.factor":                    "1",
		"offset-syncs.topic.replication.factor": "1",
		"checkpoints.topic.replication.factor":  "1",
		"heartbeats.topic.replication.factor":   "1",
		"offset.storage.replication.factor":     "1",
		"config.storage.replication.factor":     "1",
		"status.storage.replication.factor":     "1",

		// A fresh MM2 deployment for every run: its own Connect group and
		// internal topics.
		"target.group.id":      "mm2-" + run.id,
		"offset.storage.topic": "mm2-offsets." + run.id + ".internal",
		"config.storage.topic": "mm2-configs." + run.id + ".internal",
		"status.storage.topic": "mm2-status." + run.id + ".internal",

		// Features kmirror does not have (yet) are off: consumer group
		// checkpoints and offset sync, heartbeats, ACL sync. Topic config
		// sync stays on (kmirror copies configs at creation).
		"emit.heartbeats.enabled":         "false",
		"emit.checkpoints.enabled":        "false",
		"sync.group.offsets.enabled":      "false",
		"sync.topic.acls.enabled":         "false",
		"refresh.topics.interval.seconds": strconv.Itoa(int(topicRefresh / time.Second)),
	}
	if run.group != "" {
		maps.Copy(props, mm2GroupProps(run.group))
	}
	if run.eos {
		maps.Copy(props, mm2EOSProps(run.restPort))
	}
	if run.wan {
		maps.Copy(props, mm2WANProps())
	}
	return props
}

// mm2EOSProps are the settings of MM2's exactly-once mode in dedicated
// mode (Kafka's documentation, "Geo-Replication", "Exactly once"; KIP-618
// for Connect's exactly-once source support, KIP-710 for the internal REST
// server dedicated mode needs for it): exactly-once source support enabled
// for writes to the target, the internal REST server on, and the source
// read read_committed, which MirrorSourceConnector requires before it
// declares exactly-once support. The connectors keep
// exactly.once.support at its default, requested: in dedicated mode the
// setting would also reach the heartbeat and checkpoint connectors, which
// do not declare exactly-once support, and required would fail them.
// That the source tasks write in transactions is checked in the log
// (transactional producers) and on the target (commit markers).
func mm2EOSProps(restPort int) map[string]string {
	return map[string]string{
		"target.exactly.once.source.support":  "enabled",
		"dedicated.mode.enable.internal.rest": "true",
		"listeners":                           "http://127.0.0.1:" + strconv.Itoa(restPort),
		"source.consumer.isolation.level":     "read_committed",
	}
}

// mm2WANProps are MirrorMaker 2's settings for a link of high latency, as
// Kafka's documentation advises for clients far from their cluster
// ("Datacenters": larger TCP socket buffers) and for throughput: the
// sockets of the source consumers and the target producers keep the
// operating system's buffer sizes, which it grows with the round-trip
// time (-1), instead of Java's fixed 64 KiB receive and 128 KiB send
// buffers, which would cap every connection at a buffer per round trip;
// and every producer may hold 128 MiB instead of 32 MiB, so that a round
// trip's worth of batches fits. Fetch sizes (50 MiB per fetch, 10 MiB per
// partition: each of the 12 tasks has one partition), batch size (1 MiB
// after compression, the brokers' message.max.bytes) and linger (5 ms:
// on a backlog, batches fill while the previous request is in flight)
// stay as in the other scenarios.
func mm2WANProps() map[string]string {
	return map[string]string{
		"source.consumer.receive.buffer.bytes": "-1",
		"source.consumer.send.buffer.bytes":    "-1",
		"target.producer.receive.buffer.bytes": "-1",
		"target.producer.send.buffer.bytes":    "-1",
		"target.producer.buffer.memory":        strconv.Itoa(128 << 20),
	}
}

// mm2GroupProps are the settings with which MM2 translates the offsets of
// group and commits them to the same group on the target (scenario 6).
func mm2GroupProps(group string) map[string]string {
	return map[string]string{
		"groups":                              group,
		"emit.checkpoints.enabled":            "true",
		"emit.checkpoints.interval.seconds":   "1",
		"sync.group.offsets.enabled":          "true",
		"sync.group.offsets.interval.seconds": "1",
		"refresh.groups.interval.seconds":     "1",
		// Like kmirror's default: only committed transactions are copied.
		"source.consumer.isolation.level": "read_committed",
	}
}

// mm2JVMFlags are bin/connect-mirror-maker.sh's heap and
// bin/kafka-run-class.sh's G1 settings.
func mm2JVMFlags() []string {
	return []string{
		"-Xms256m", "-Xmx2g",
		"-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
		"-XX:+ExplicitGCInvokesConcurrent", "-XX:+ExitOnOutOfMemoryError",
		"-Djava.awt.headless=true",
	}
}

func (h *harness) launchMM2(run toolRun) (*proc, error) {
	if run.eos {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		run.restPort = port
	}
	props := h.mm2Props(run)
	cfg := string(formatProps("MirrorMaker 2 configuration of bench run "+run.id, props))
	file := filepath.Join(h.env.workDir, "mm2-"+run.id+".properties")
	if err := writeFile(file, []byte(cfg)); err != nil {
		return nil, err
	}
	log4j := filepath.Join(h.env.workDir, "mm2-log4j2.properties")
	if err := writeFile(log4j, []byte(mm2Log4j)); err != nil {
		return nil, err
	}
	args := append(mm2JVMFlags(),
		"-Dlog4j2.configurationFile="+log4j,
		"-cp", filepath.Join(h.env.libs, "*"),
		"org.apache.kafka.connect.mirror.MirrorMaker", file)
	return startProc("MM2", filepath.Join(h.env.workDir, "mm2-"+run.id+".log"), nil, h.env.java, args...)
}

// mm2Log4j is MirrorMaker's log at INFO, as config/connect-log4j2.yaml has
// it, without the configuration dumps.
const mm2Log4j = `status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = WARN
`

// pipeArgs are the bare pipe's arguments for run.
func (h *harness) pipeArgs(run toolRun) []string {
	src, tgt := h.bootstraps(run)
	var mode []string
	if h.opts.pipeForward {
		mode = []string{"-forward"}
	}
	return append(mode,
		"-source", src,
		"-target", tgt,
		"-topics", strings.Join(run.topicList, ","),
		"-prefix", "pipe.",
		"-linger", strconv.Itoa(lingerMs)+"ms",
		"-batch-bytes", strconv.Itoa(batchBytes),
		"-buffered-bytes", strconv.Itoa(bufferedBytes),
		"-fetch-max-bytes", strconv.Itoa(fetchMaxBytes),
		"-fetch-max-partition-bytes", strconv.Itoa(fetchMaxPartBytes),
	)
}

func (h *harness) launchPipe(run toolRun) (*proc, error) {
	return startProc("pipe", filepath.Join(h.env.workDir, "pipe-"+run.id+".log"), nil, h.env.pipe, h.pipeArgs(run)...)
}

// freePort returns a TCP port of the loopback interface that was free a
// moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
