package kafkatest

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestFetchScriptPinsKafka3Version keeps Kafka3Version and the 3.x release
// that `scripts/kafka/fetch.sh 3` downloads in step.
func TestFetchScriptPinsKafka3Version(t *testing.T) {
	script, err := os.ReadFile(filepath.Join("..", "..", "scripts", "kafka", "fetch.sh"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^KAFKA3_VERSION=(\S+)$`).FindSubmatch(script)
	if m == nil {
		t.Fatal("no KAFKA3_VERSION=... line in fetch.sh")
	}
	if got := string(m[1]); got != Kafka3Version {
		t.Fatalf("fetch.sh pins Kafka 3.x %s, Kafka3Version is %s", got, Kafka3Version)
	}
}

func TestLibs3DirFromEnv(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvLibs3, dir)
	if _, err := Libs3Dir(); err == nil {
		t.Fatalf("Libs3Dir accepted %s without a kafka jar", dir)
	}
	if err := os.WriteFile(filepath.Join(dir, "kafka_2.13-3.9.9.jar"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := Libs3Dir()
	if err != nil || got != dir {
		t.Fatalf("Libs3Dir() = %q, %v; want %q", got, err, dir)
	}
}

// TestClusterKafka3 starts a cluster from the Kafka 3.x jars (Options.Libs)
// and checks that it is one: a broker without KIP-890's transaction
// protocol (Produce v12 and the transaction.version feature came with 4.0).
func TestClusterKafka3(t *testing.T) {
	c := Start(t, Options{Name: "kafka3", Libs: RequireLibs3(t)})
	const topic = "events"
	createTopic(t, c, topic)
	produce(t, c, topic, "a", "b")
	expectRecords(t, c, topic, "a", "b")

	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	resp, err := kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, newClient(t, c))
	if err != nil {
		t.Fatalf("ApiVersions: %v", err)
	}
	for _, k := range resp.ApiKeys {
		if k.ApiKey == 0 && k.MaxVersion >= 12 {
			t.Errorf("the broker supports Produce v%d: Kafka 4 or newer, not %s", k.MaxVersion, Kafka3Version)
		}
	}
	for _, f := range resp.FinalizedFeatures {
		if f.Name == "transaction.version" && f.MaxVersionLevel >= 2 {
			t.Errorf("transaction.version %d is finalized: not the Kafka 3.x transaction protocol", f.MaxVersionLevel)
		}
	}
	// The log goes through the Log4j 2 binding (fetch.sh keeps Kafka
	// 3's reload4j binding out), so failures can quote it.
	out, err := os.ReadFile(c.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`\] INFO .*Kafka Server started`).Match(out) {
		t.Errorf("no \"Kafka Server started\" at INFO in the log:\n%s", logExcerpt(c.LogPath()))
	}
}
