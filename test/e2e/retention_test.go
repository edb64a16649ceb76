package e2e

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/verify"
)

// TestSourceDeletionWhileTargetDown deletes source records (DeleteRecords,
// as retention does) that kmirror has not copied yet, because the target
// cluster is down and kmirror's small buffers hold it back. Once the
// target is back: the log names the lost range of the partition exactly,
// kmirror_records_lost_total equals its size, and every other record is on
// the target, in order.
func TestSourceDeletionWhileTargetDown(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	const (
		topic   = "logs"
		target  = "src.logs"
		first   = 100 // records per partition copied before the target goes down
		down    = 300 // records per partition written while it is down
		after   = 50  // records per partition written after the deletion
		cutAt   = first + 250
		valSize = 1000
	)
	createTopic(t, p.srcCl, topic, 2, nil)
	rec := func(part int32, i int) *kgo.Record {
		v := bytes.Repeat([]byte{'x'}, valSize)
		copy(v, fmt.Sprintf("%d-%d-", part, i))
		return &kgo.Record{Topic: topic, Partition: part, Key: []byte(strconv.Itoa(i)), Value: v}
	}
	// Small source batches: a fetch returns at least one whole batch.
	prod := newClient(t, p.src.Bootstrap(), kgo.ProducerBatchMaxBytes(4096))
	write := func(from, to int) {
		var recs []*kgo.Record
		for i := from; i < to; i++ {
			recs = append(recs, rec(0, i), rec(1, i))
		}
		produce(t, prod, recs)
	}
	write(0, first)

	httpAddr := freeAddr(t)
	// Small buffers, so that kmirror holds few records while the target
	// is down and the rest stays on the source only.
	k := startKmirror(t, writeConfig(t, p.flowConfig(httpAddr, `topics: [logs]
sync_group_offsets: false
producer: {batch_max_bytes: 16384, max_buffered_bytes: 16384}
consumer: {fetch_max_bytes: 8192, fetch_max_partition_bytes: 4096}`)), httpAddr)
	waitFor(t, 2*time.Minute, "the first records to be copied", func() (bool, string) {
		e := endOffsets(t, p.dstCl, target)
		return e[0] == first && e[1] == first, fmt.Sprintf("target ends %v", e)
	})

	p.dst.Stop()
	write(first, first+down)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	adm := kadm.NewClient(p.srcCl)
	var offs kadm.Offsets
	offs.Add(kadm.Offset{Topic: topic, Partition: 0, At: cutAt})
	res, err := adm.DeleteRecords(ctx, offs)
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Error(); err != nil {
		t.Fatal(err)
	}
	write(first+down, first+down+after)
	p.dst.Restart()

	total := first + down + after
	waitFor(t, 3*time.Minute, "partition 1 to be copied in full and partition 0 to the end", func() (bool, string) {
		e := endOffsets(t, p.dstCl, target)
		tgt, err := verify.ReadAll(ctx, p.dstCl, target)
		if err != nil {
			return false, err.Error()
		}
		n := len(tgt[0])
		last := ""
		if n > 0 {
			last = string(tgt[0][n-1].Key)
		}
		return int(e[1]) == total && last == strconv.Itoa(total-1), fmt.Sprintf("target ends %v, last key of partition 0 %q", e, last)
	})

	tgt, err := verify.ReadAll(ctx, p.dstCl, target)
	if err != nil {
		t.Fatal(err)
	}
	// Partition 0 on the target: records 0..from-1, then cutAt..total-1.
	var got []int
	for _, r := range tgt[0] {
		i, err := strconv.Atoi(string(r.Key))
		if err != nil {
			t.Fatalf("unexpected key %q", r.Key)
		}
		if !bytes.Equal(r.Value, rec(0, i).Value) {
			t.Fatalf("record %d has a different value on the target", i)
		}
		got = append(got, i)
	}
	from := 0
	for from < len(got) && got[from] == from {
		from++
	}
	lost := cutAt - from
	t.Logf("partition 0: copied before the deletion up to offset %d; deleted before copied [%d, %d) = %d records; on the target %d records",
		from, from, cutAt, lost, len(got))
	if from < first || from >= cutAt {
		t.Fatalf("kmirror copied up to offset %d before the deletion at %d: the test did not make it lose records", from, cutAt)
	}
	for j, i := range got[from:] {
		if i != cutAt+j {
			t.Fatalf("partition 0, target record %d is source offset %d, want %d (nothing else lost, in order)", from+j, i, cutAt+j)
		}
	}
	if len(got) != from+total-cutAt {
		t.Errorf("partition 0: target holds %d records, want %d", len(got), from+total-cutAt)
	}
	for i, r := range tgt[1] {
		if string(r.Key) != strconv.Itoa(i) || !bytes.Equal(r.Value, rec(1, i).Value) {
			t.Fatalf("partition 1, target record %d differs from the source's", i)
		}
	}

	line := regexp.MustCompile(`level=ERROR msg="source deleted records before they were copied[^"]*" .*topic=logs partition=0 from=(\d+) to=(\d+) records=(\d+)`)
	ms := line.FindAllStringSubmatch(k.output(), -1)
	if len(ms) != 1 {
		t.Fatalf("want exactly one log line for the lost range, got %d:\n%s", len(ms), k.output())
	}
	t.Logf("log: from=%s to=%s records=%s", ms[0][1], ms[0][2], ms[0][3])
	if ms[0][1] != strconv.Itoa(from) || ms[0][2] != strconv.Itoa(cutAt) || ms[0][3] != strconv.Itoa(lost) {
		t.Errorf("log names [%s, %s) (%s records), want [%d, %d) (%d records)", ms[0][1], ms[0][2], ms[0][3], from, cutAt, lost)
	}
	_, body, err := k.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	v, _ := metricValue(body, `kmirror_records_lost_total{flow="e2e",topic="logs"}`)
	t.Logf("kmirror_records_lost_total = %v", v)
	if v != float64(lost) {
		t.Errorf("kmirror_records_lost_total = %v, want %d", v, lost)
	}
}
