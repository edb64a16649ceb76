package kafkaproc

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
)

// ServerProps returns the server.properties of a single-node KRaft cluster
// (node 1, broker and controller in one JVM) listening on 127.0.0.1:port
// for clients and 127.0.0.1:controllerPort for the quorum, with its log in
// dataDir: one replica of everything, single-partition internal topics, no
// automatic topic creation, no initial rebalance delay. Everything else is
// Kafka's default; the test harness, the benchmark and scripts/kafka/kafka.sh
// add their own tuning on top (Tuning*).
func ServerProps(port, controllerPort int, dataDir string) map[string]string {
	broker := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	controller := net.JoinHostPort("127.0.0.1", strconv.Itoa(controllerPort))
	return map[string]string{
		// KRaft, combined mode, static single-voter quorum.
		"process.roles":                  "broker,controller",
		"node.id":                        "1",
		"controller.quorum.voters":       "1@" + controller,
		"listeners":                      "PLAINTEXT://" + broker + ",CONTROLLER://" + controller,
		"advertised.listeners":           "PLAINTEXT://" + broker,
		"controller.listener.names":      "CONTROLLER",
		"inter.broker.listener.name":     "PLAINTEXT",
		"listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
		"log.dirs":                       dataDir,

		// One node: one replica, one partition of everything internal.
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
	}
}

// TuningTests makes a broker light on a 2-core machine and its background
// work (compaction, retention, deletion, fencing a crashed broker) fast, so
// that tests of those finish in seconds.
func TuningTests() map[string]string {
	return map[string]string{
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

		// A transaction left open past its timeout (a producer killed
		// mid-transaction) is aborted at the coordinator's next check:
		// every 10 s by default, every second here, so that it ends
		// about a second after its timeout.
		"transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",

		"num.network.threads":               "2",
		"num.io.threads":                    "2",
		"background.threads":                "2",
		"num.recovery.threads.per.data.dir": "1",
		"num.replica.fetchers":              "1",
	}
}

// TuningBench keeps Kafka's defaults where they matter for throughput and
// only trims threads for a 2-core machine.
func TuningBench() map[string]string {
	return map[string]string{
		"num.network.threads":               "3",
		"num.io.threads":                    "4",
		"num.recovery.threads.per.data.dir": "1",
		"log.segment.delete.delay.ms":       "1000",
	}
}

// BrokerOnly turns p, from ServerProps, into the properties of a
// broker-only node nodeID listening on 127.0.0.1:port, whose controller is
// node 1 at 127.0.0.1:controllerPort.
func BrokerOnly(p map[string]string, nodeID, port, controllerPort int) {
	broker := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p["process.roles"] = "broker"
	p["node.id"] = strconv.Itoa(nodeID)
	p["controller.quorum.voters"] = "1@" + net.JoinHostPort("127.0.0.1", strconv.Itoa(controllerPort))
	p["listeners"] = "PLAINTEXT://" + broker
	p["advertised.listeners"] = "PLAINTEXT://" + broker
}

// With returns p with the entries of each overlay added, later ones
// winning.
func With(p map[string]string, overlays ...map[string]string) map[string]string {
	for _, o := range overlays {
		maps.Copy(p, o)
	}
	return p
}

// FormatProps renders p as a Java properties file, keys sorted, under a
// comment line.
func FormatProps(header string, p map[string]string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n", header)
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

// Log4jConfig sends a broker's logs to stdout at INFO, silencing the
// per-component config dumps.
const Log4jConfig = `status = warn
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
