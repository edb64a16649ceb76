package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/verify"
)

// TestDecompressionBomb writes a record batch that is half a megabyte on
// the wire and 512 MiB decompressed (gzip of zeros) into partition 0 of a
// source topic, between ordinary records, and runs kmirror with
// memory_limit: 256MiB.
//
// Partition 0 stops before the batch with exactly one error line naming
// topic, partition, offset and the limit, counted in
// kmirror_errors_total{kind="decompress_too_large"} and
// kmirror_partitions_stopped, shown in /api/flows and by `kmirror status`;
// the target holds exactly the records before the batch, also after
// several retries. Partition 1 of the same topic keeps being copied while
// partition 0 is stopped. kmirror's peak RSS (VmHWM) stays below the
// memory limit throughout.
func TestDecompressionBomb(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	const (
		topic, target = "bombs", "src.bombs"
		before, after = 100, 100 // records of partition 0 around the batch
		limit         = 256 << 20
		bombRecords   = 512 // of 1 MiB of zeros each
	)
	createTopic(t, p.srcCl, topic, 2, map[string]string{"max.message.bytes": strconv.Itoa(4 << 20)})

	// Recent timestamps: retention (7 days by default) would delete older ones.
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	rec := func(part int32, i int) *kgo.Record {
		return &kgo.Record{Topic: topic, Partition: part, Key: fmt.Appendf(nil, "k%d-%d", part, i),
			Value: fmt.Appendf(nil, "bombs-%d-%d", part, i), Timestamp: base.Add(time.Duration(i) * time.Second)}
	}
	var p0 []*kgo.Record
	round := func(part int32, from, n int) []*kgo.Record {
		var rs []*kgo.Record
		for i := from; i < from+n; i++ {
			rs = append(rs, rec(part, i))
		}
		produce(t, p.srcCl, rs)
		return rs
	}
	p0 = append(p0, round(0, 0, before)...)
	round(1, 0, before)
	bomb := gzipBomb(t, bombRecords, 1<<20, base)
	t.Logf("bomb batch: %d bytes on the wire, %d MiB decompressed", len(bomb), bombRecords)
	if at := produceRawBatch(t, p.srcCl, topic, 0, bomb); at != before {
		t.Fatalf("bomb batch written at offset %d, want %d", at, before)
	}
	round(0, before+bombRecords, after)
	round(1, before, after)

	httpAddr := freeAddr(t)
	cfgPath := writeConfig(t, p.flowConfig(httpAddr, "topics: [bombs]\nsync_group_offsets: false\nrefused_retry_interval: 2s")+
		fmt.Sprintf("memory_limit: %dMiB\n", limit>>20))
	k := startKmirror(t, cfgPath, httpAddr)

	// Partition 1 keeps flowing while partition 0 is stopped.
	n1 := before + after
	for i := range 3 {
		waitFor(t, 2*time.Minute, "partition 1 to be copied", func() (bool, string) {
			te := endOffsets(t, p.dstCl, target)
			return te[1] == int64(n1), fmt.Sprintf("target partition 1 end %d, want %d", te[1], n1)
		})
		if i < 2 {
			round(1, n1, 50)
			n1 += 50
		}
	}
	errorLines := func() []string {
		var out []string
		for _, l := range strings.Split(k.output(), "\n") {
			if strings.Contains(l, "level=ERROR") && (strings.Contains(l, "topic=bombs") || strings.Contains(l, "decompress")) {
				out = append(out, l)
			}
		}
		return out
	}
	waitFor(t, time.Minute, "the stop to be logged", func() (bool, string) { return len(errorLines()) > 0, "" })
	// Several retries (every 2 s) fail the same way: still one line.
	time.Sleep(10 * time.Second)
	lines := errorLines()
	if len(lines) != 1 {
		t.Errorf("want exactly 1 error line, got %d:\n%s", len(lines), strings.Join(lines, "\n"))
	} else {
		t.Logf("error line: %s", lines[0])
		for _, want := range []string{"decompresses to more than the flow's limit", "topic=bombs", "partition=0",
			"offset=" + strconv.Itoa(before), "batch_to=" + strconv.Itoa(before+bombRecords-1), "limit_bytes="} {
			if !strings.Contains(lines[0], want) {
				t.Errorf("error line lacks %q", want)
			}
		}
	}

	_, body, err := k.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for series, want := range map[string]float64{
		`kmirror_errors_total{flow="e2e",kind="decompress_too_large"}`: 1,
		`kmirror_partitions_stopped{flow="e2e"}`:                       1,
	} {
		if v, _ := metricValue(body, series); v != want {
			t.Errorf("%s = %v, want %v", series, v, want)
		}
	}
	if _, status, err := k.get("/api/flows"); err != nil || !regexp.MustCompile(`"Offset":\s*`+strconv.Itoa(before)+`\b`).MatchString(status) ||
		!strings.Contains(status, "decompresses to more than") {
		t.Errorf("status API does not show partition 0 stopped at offset %d (err %v): %s", before, err, status)
	}
	waitFor(t, 30*time.Second, "kmirror status to show the stop", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, _ := command(ctx, t, "status", "--config", cfgPath).CombinedOutput()
		return strings.Contains(string(out), "decompress"), string(out)
	})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tgtRecs, err := verify.ReadAll(ctx, p.dstCl, target)
	if err != nil {
		t.Fatal(err)
	}
	if len(tgtRecs[0]) != before {
		t.Errorf("target partition 0 holds %d records, want exactly the %d before the batch", len(tgtRecs[0]), before)
	}
	samePrefix(t, "partition 0 while stopped", p0, tgtRecs[0])

	hwm := vmHWM(t, k.cmd.Process.Pid)
	t.Logf("kmirror peak RSS (VmHWM): %d MiB of the %d MiB memory limit", hwm>>20, limit>>20)
	if hwm >= limit {
		t.Errorf("peak RSS %d MiB, want below memory_limit %d MiB", hwm>>20, limit>>20)
	}
	for _, l := range strings.Split(k.output(), "\n") {
		if (strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN")) && !strings.Contains(l, "topic=bombs") {
			t.Logf("other log line: %s", l)
		}
	}
	k.stop()
}

// gzipBomb returns a record batch (magic 2, gzip) of n records whose
// values are size zero bytes each, built as a stream: neither the records
// nor the batch are ever whole in memory.
func gzipBomb(t *testing.T, n, size int, ts time.Time) []byte {
	t.Helper()
	var compressed bytes.Buffer
	zw, err := gzip.NewWriterLevel(&compressed, gzip.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	zeros := make([]byte, 1<<20)
	for i := range n {
		// A record: length, attributes, timestamp delta, offset delta,
		// key (null), value, header count; integers zig-zag varints.
		var body []byte
		body = append(body, 0)
		body = binary.AppendVarint(body, 0)
		body = binary.AppendVarint(body, int64(i))
		body = binary.AppendVarint(body, -1)
		body = binary.AppendVarint(body, int64(size))
		bodyLen := len(body) + size + 1 // + value + header count
		head := binary.AppendVarint(nil, int64(bodyLen))
		if _, err := zw.Write(append(head, body...)); err != nil {
			t.Fatal(err)
		}
		for left := size; left > 0; left -= min(left, len(zeros)) {
			if _, err := zw.Write(zeros[:min(left, len(zeros))]); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := zw.Write(binary.AppendVarint(nil, 0)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	b := kmsg.RecordBatch{
		PartitionLeaderEpoch: -1,
		Magic:                2,
		Attributes:           1, // gzip
		LastOffsetDelta:      int32(n - 1),
		FirstTimestamp:       ts.UnixMilli(),
		MaxTimestamp:         ts.UnixMilli(),
		ProducerID:           -1,
		ProducerEpoch:        -1,
		FirstSequence:        -1,
		NumRecords:           int32(n),
		Records:              compressed.Bytes(),
	}
	// Length counts the bytes after itself; the CRC (Castagnoli) covers
	// the attributes to the end.
	b.Length = int32(49 + len(b.Records))
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[17:21], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	return raw
}

// produceRawBatch writes one record batch, as it is, to a partition of a
// single-broker cluster and returns its base offset.
func produceRawBatch(t *testing.T, cl *kgo.Client, topic string, partition int32, batch []byte) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req := kmsg.NewPtrProduceRequest()
	req.Acks = -1
	req.TimeoutMillis = 30_000
	td, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err != nil || td[topic].Err != nil {
		t.Fatalf("looking up topic %s: %v %v", topic, err, td[topic].Err)
	}
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic, rt.TopicID = topic, td[topic].ID // by name up to v12, by ID from v13
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition = partition
	rp.Records = batch
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("producing the batch: %v", err)
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		t.Fatalf("no answer for %s/%d: %+v", topic, partition, resp)
	}
	got := resp.Topics[0].Partitions[0]
	if err := kerr.ErrorForCode(got.ErrorCode); err != nil {
		msg := ""
		if got.ErrorMessage != nil {
			msg = *got.ErrorMessage
		}
		t.Fatalf("the broker refused the batch: %v %s", err, msg)
	}
	return got.BaseOffset
}

// vmHWM returns the peak resident set size of process pid.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err != nil {
				t.Fatalf("VmHWM line %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}
