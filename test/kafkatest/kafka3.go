package kafkatest

import "testing"

// Kafka3Version is the Apache Kafka 3.x release that tests run beside
// KafkaVersion: the last 3.x line, whose brokers speak the transaction
// protocol from before KIP-890 (partitions added with AddPartitionsToTxn,
// no epoch bump per transaction). `scripts/kafka/fetch.sh 3` downloads it
// into <repo root>/.cache/kafka/<Kafka3Version>/libs.
const Kafka3Version = "3.9.2"

// EnvLibs3 names the directory of the Kafka 3.x jars (scripts/test.sh sets
// it to the output of `scripts/kafka/fetch.sh 3`).
const EnvLibs3 = "KMIRROR_KAFKA3_LIBS"

// Libs3Dir is LibsDir for the Kafka 3.x jars: $KMIRROR_KAFKA3_LIBS if set,
// else <repo root>/.cache/kafka/<Kafka3Version>/libs.
func Libs3Dir() (string, error) {
	return findLibs(EnvLibs3, Kafka3Version, "scripts/kafka/fetch.sh 3")
}

// RequireLibs3 is RequireLibs for the Kafka 3.x jars: it returns Libs3Dir,
// or skips the test (fails it if $KMIRROR_REQUIRE_KAFKA is "1"). Pass the
// directory to Start in Options.Libs:
//
//	old := kafkatest.Start(t, kafkatest.Options{Name: "kafka3", Libs: kafkatest.RequireLibs3(t)})
func RequireLibs3(t testing.TB) string {
	t.Helper()
	return requireLibs(t, Libs3Dir)
}
