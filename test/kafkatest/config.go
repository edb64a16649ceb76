package kafkatest

import (
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
)

// serverProps returns the broker+controller configuration of a single-node
// KRaft cluster listening on 127.0.0.1:port (clients) and
// 127.0.0.1:controllerPort (the quorum), with its log in dataDir. extra
// overrides or adds to the defaults.
//
// The defaults are tuned for tests on a small machine: one replica of
// everything, single-partition internal topics, few threads, no automatic
// topic creation, and background tasks (log cleaner, retention) that run
// every second so compaction and retention tests finish fast.
func serverProps(port, controllerPort int, dataDir string, extra map[string]string) map[string]string {
	broker := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	controller := net.JoinHostPort("127.0.0.1", strconv.Itoa(controllerPort))
	p := map[string]string{
		// KRaft, combined mode, static single-voter quorum.
		"process.roles":                                    "broker,controller",
		"node.id":                                          "1",
		"controller.quorum.voters":                         "1@" + controller,
		"listeners":                                        "PLAINTEXT://" + broker + ",CONTROLLER://" + controller,
		"advertised.listeners":                             "PLAINTEXT://" + broker,
		"controller.listener.names":                        "CONTROLLER",
		"inter.broker.listener.name":                       "PLAINTEXT",
		"listener.security.protocol.map":                   "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
		"log.dirs":                                         dataDir,
		"auto.create.topics.enable":                        "false",
		"num.partitions":                                   "1",
		"default.replication.factor":                       "1",
		"min.insync.replicas":                              "1",
		"delete.topic.enable":                              "true",
		"group.initial.rebalance.delay.ms":                 "0",
		"offsets.topic.replication.factor":                 "1",
		"offsets.topic.num.partitions":                     "1",
		"transaction.state.log.replication.factor":         "1",
		"transaction.state.log.min.isr":                    "1",
		"transaction.state.log.num.partitions":             "1",
		"share.coordinator.state.topic.replication.factor": "1",
		"share.coordinator.state.topic.min.isr":            "1",
		"share.coordinator.state.topic.num.partitions":     "1",

		// Fast background work: compaction, retention, deletion.
		"log.cleaner.backoff.ms":          "1000",
		"log.cleaner.threads":             "1",
		"log.cleaner.dedupe.buffer.size":  "16777216", // default 128 MiB is a big bite of a 768 MiB heap
		"log.retention.check.interval.ms": "1000",
		"log.initial.task.delay.ms":       "0",
		"log.segment.delete.delay.ms":     "1000",

		// A crashed (killed) broker cannot register again until the
		// controller has fenced its old incarnation, one session timeout
		// after its last heartbeat: 9 s by default, 4 s here.
		"broker.session.timeout.ms":    "4000",
		"broker.heartbeat.interval.ms": "1000",

		// Light on a 2-core machine.
		"num.network.threads":               "2",
		"num.io.threads":                    "2",
		"background.threads":                "2",
		"num.recovery.threads.per.data.dir": "1",
		"num.replica.fetchers":              "1",
	}
	maps.Copy(p, extra)
	return p
}

// brokerOnly turns the properties of serverProps into those of a
// broker-only node nodeID listening on 127.0.0.1:port, whose controller is
// node 1 at 127.0.0.1:controllerPort.
func brokerOnly(p map[string]string, nodeID, port, controllerPort int) {
	broker := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p["process.roles"] = "broker"
	p["node.id"] = strconv.Itoa(nodeID)
	p["controller.quorum.voters"] = "1@" + net.JoinHostPort("127.0.0.1", strconv.Itoa(controllerPort))
	p["listeners"] = "PLAINTEXT://" + broker
	p["advertised.listeners"] = "PLAINTEXT://" + broker
}

// formatProps renders p as a Java properties file, keys sorted.
func formatProps(p map[string]string) []byte {
	var b strings.Builder
	b.WriteString("# Written by kmirror's test/kafkatest.\n")
	for _, k := range slices.Sorted(maps.Keys(p)) {
		fmt.Fprintf(&b, "%s=%s\n", escapeProp(k), escapeProp(p[k]))
	}
	return []byte(b.String())
}

// escapeProp escapes the characters that java.util.Properties would
// otherwise interpret in a key or value.
func escapeProp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, "\r", `\r`).Replace(s)
}

// log4jConfig sends the JVM's logs to stdout (which the harness redirects to
// the cluster's log file) at INFO, silencing the per-component config dumps.
const log4jConfig = `# Written by kmirror's test/kafkatest.
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = WARN
`

// writeFile writes data to path, readable only by the owner.
func writeFile(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
