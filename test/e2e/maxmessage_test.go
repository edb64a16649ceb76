package e2e

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/replicate"
	"github.com/kmirror/kmirror/internal/topicsync"
	"github.com/kmirror/kmirror/internal/verify"
)

// batchSize is the size of a v2 record batch holding one record with a
// one-byte key, no headers and a value of n bytes: 61 bytes of batch
// header, and the record's length, attributes, timestamp and offset
// deltas, key length and key, value length and value, and header count
// (lengths as zigzag varints).
func batchSize(n int) int {
	body := 1 + 1 + 1 + 1 + 1 + varintLen(n) + n + 1
	return 61 + varintLen(body) + body
}

func varintLen(v int) int {
	z := uint64(v) << 1 // zigzag of a non-negative value
	n := 1
	for z >= 0x80 {
		z >>= 7
		n++
	}
	return n
}

// valueFilling returns the size of the value whose one-record batch is
// exactly limit bytes.
func valueFilling(t *testing.T, limit int) int {
	t.Helper()
	for n := limit - 61; n > limit-100; n-- {
		if batchSize(n) == limit {
			return n
		}
	}
	t.Fatalf("no value size gives a batch of exactly %d bytes", limit)
	return 0
}

// TestMaxMessageWithProvenance writes, to two source topics, a record
// whose uncompressed one-record batch is exactly the topic's
// max.message.bytes (the broker's default message.max.bytes for one, an
// explicit 2000000 for the other; one byte more is refused by the source),
// between small records, and replicates them with identity naming, so with
// the provenance header added to each: every record reaches the target,
// equal to the source but for the header, no partition stops, the target
// topics got max.message.bytes with room for the header, and a later
// config change on the source is brought over without touching it.
func TestMaxMessageWithProvenance(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	srcAdm, dstAdm := kadm.NewClient(p.srcCl), kadm.NewClient(p.dstCl)

	createTopic(t, p.srcCl, "big", 1, nil)
	createTopic(t, p.srcCl, "bigger", 1, map[string]string{"max.message.bytes": "2000000"})
	limits := map[string]int{}
	for _, topic := range []string{"big", "bigger"} {
		v, err := strconv.Atoi(topicConfig(t, srcAdm, topic, "max.message.bytes"))
		if err != nil {
			t.Fatalf("source %s max.message.bytes: %v", topic, err)
		}
		limits[topic] = v
	}
	t.Logf("source max.message.bytes: big %d (the broker's default), bigger %d", limits["big"], limits["bigger"])

	// Uncompressed, one record a batch, so that the batch's size is known.
	prod := newClient(t, p.src.Bootstrap(), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerBatchMaxBytes(8<<20), kgo.ProducerLinger(0), kgo.MaxProduceRequestsInflightPerBroker(1))
	counts := map[string]int64{}
	for _, topic := range []string{"big", "bigger"} {
		value := make([]byte, valueFilling(t, limits[topic]))
		if _, err := rand.Read(value); err != nil {
			t.Fatal(err)
		}
		// One byte more than the limit is refused: the record is exactly
		// at it.
		over := &kgo.Record{Topic: topic, Key: []byte("k"), Value: append(value, 0)}
		if err := prod.ProduceSync(ctx, over).FirstErr(); !errors.Is(err, kerr.MessageTooLarge) {
			t.Fatalf("a record one byte over %s's limit: got %v, want MESSAGE_TOO_LARGE", topic, err)
		}
		produce(t, prod, []*kgo.Record{{Topic: topic, Key: []byte("s"), Value: []byte("before")}})
		produce(t, prod, []*kgo.Record{{Topic: topic, Key: []byte("k"), Value: value}})
		produce(t, prod, []*kgo.Record{{Topic: topic, Key: []byte("s"), Value: []byte("after")}})
		counts[topic] = 3
	}

	httpAddr := freeAddr(t)
	cfg := writeConfig(t, p.flowConfig(httpAddr, "topics: [big, bigger]\ntopic_naming: identity\ntopic_refresh_interval: 1s"))
	k := startKmirror(t, cfg, httpAddr)
	for topic, n := range counts {
		took := waitFor(t, 2*time.Minute, topic+" on the target", func() (bool, string) {
			got := sum(endOffsets(t, p.dstCl, topic))
			return got == n, fmt.Sprintf("target %s has %d of %d records; kmirror: %s", topic, got, n, lastLines(k.output(), 3))
		})
		t.Logf("%s: %d records on the target %s after start", topic, n, took.Round(time.Millisecond))
	}
	rep, err := verify.Compare(ctx, p.srcCl, p.dstCl, []verify.Pair{{Source: "big", Target: "big"}, {Source: "bigger", Target: "bigger"}}, replicate.HeaderProvenance)
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range rep.Topics {
		t.Logf("%s -> %s: source %d, target %d, matched %d", tr.Source, tr.Target, tr.SourceRecords, tr.TargetRecords, tr.Matched)
		if !tr.OK() || tr.SourceRecords != counts[tr.Source] {
			t.Errorf("%s: target differs from source: %v", tr.Source, tr.Mismatches)
		}
	}
	// The big copies carry the provenance header.
	for _, topic := range []string{"big", "bigger"} {
		r := recordAt(t, p.dst.Bootstrap(), topic, 1)
		var hv []byte
		for _, h := range r.Headers {
			if h.Key == replicate.HeaderProvenance {
				hv = h.Value
			}
		}
		if len(hv) == 0 || len(r.Value) != valueFilling(t, limits[topic]) {
			t.Errorf("target %s offset 1: value %d bytes, provenance %q; want the big record with the header", topic, len(r.Value), hv)
		}
		t.Logf("target %s: the %d-byte record carries a %d-byte provenance header (%s)", topic, len(r.Value),
			topicsync.HeaderSize(replicate.HeaderProvenance, hv), hv)
	}

	// The target topics' limits have room for the header.
	for topic, limit := range limits {
		want := strconv.FormatInt(int64(limit)+topicsync.MaxMessageHeadroom(int64(limit)), 10)
		if got := topicConfig(t, dstAdm, topic, "max.message.bytes"); got != want {
			t.Errorf("target %s max.message.bytes = %s, want %s (source %d + headroom)", topic, got, want, limit)
		}
	}
	_, body, _ := k.get("/metrics")
	if v, ok := metricValue(body, `kmirror_partitions_stopped{flow="e2e"}`); !ok || v != 0 {
		t.Errorf("kmirror_partitions_stopped = %v (exported %v), want 0", v, ok)
	}
	if v, ok := metricValue(body, `kmirror_topic_config_updates_total{flow="e2e"}`); !ok || v != 0 {
		t.Errorf("kmirror_topic_config_updates_total = %v (exported %v) before any source change, want 0", v, ok)
	}

	// A change on the source is brought over; max.message.bytes stays.
	if _, err := srcAdm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: kadm.StringPtr("7200000")}}, "bigger"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "retention.ms on the target", func() (bool, string) {
		v := topicConfig(t, dstAdm, "bigger", "retention.ms")
		return v == "7200000", "retention.ms = " + v
	})
	waitFor(t, 30*time.Second, "the config update counted", func() (bool, string) {
		_, body, _ := k.get("/metrics")
		v, _ := metricValue(body, `kmirror_topic_config_updates_total{flow="e2e"}`)
		return v >= 1, fmt.Sprintf("kmirror_topic_config_updates_total = %v", v)
	})
	want := strconv.FormatInt(int64(limits["bigger"])+topicsync.MaxMessageHeadroom(int64(limits["bigger"])), 10)
	if got := topicConfig(t, dstAdm, "bigger", "max.message.bytes"); got != want {
		t.Errorf("after the retention change, target bigger max.message.bytes = %s, want %s", got, want)
	}
	_, body, _ = k.get("/metrics")
	if v, _ := metricValue(body, `kmirror_topic_config_updates_total{flow="e2e"}`); v != 1 {
		t.Errorf("kmirror_topic_config_updates_total = %v, want 1 (the retention change alone)", v)
	}
	k.stop()
}

// recordAt reads the record at offset of partition 0 of topic.
func recordAt(t *testing.T, bootstrap, topic string, offset int64) *kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().At(offset)}}),
		kgo.FetchMaxBytes(8<<20), kgo.FetchMaxPartitionBytes(8<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("reading %s offset %d: %v", topic, offset, err)
		}
		for _, r := range fs.Records() {
			if r.Offset == offset {
				return r
			}
		}
	}
}
