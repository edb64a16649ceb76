package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/verify"
)

// TestRefusedRecord writes a record the target can never accept (larger
// than the target topic's max.message.bytes) in the middle of a partition,
// with traffic on other partitions and another topic.
//
// Without a dead-letter topic: the target partition holds exactly the
// source's records before the refused one, in order, and nothing after it,
// for 20 s; kmirror logs exactly one error naming topic, partition and
// offset; the stopped partition shows in the metrics and the status API;
// every other partition and topic is copied in full.
//
// Then kmirror is restarted with dead_letter_topic: the refused record is
// in the dead-letter topic with headers naming its source, it is counted,
// and the partition goes on: the target holds the source minus that
// record, in order.
func TestRefusedRecord(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	const (
		topic, other = "orders", "other"
		target       = "src.orders"
		perPartition = 200
		bigAt        = 60 // source offset of the refused record in partition 0
		dlq          = "kmirror.dead-letters"
	)
	createTopic(t, p.srcCl, topic, 3, nil)
	createTopic(t, p.srcCl, other, 2, nil)
	// The target topic exists beforehand with a small record size limit.
	createTopic(t, p.dstCl, target, 3, map[string]string{"max.message.bytes": "20000"})

	big := make([]byte, 100_000) // random: compression cannot shrink it under the limit
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	var recs []*kgo.Record
	for i := range perPartition {
		for part := range int32(3) {
			r := &kgo.Record{Topic: topic, Partition: part, Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "orders-%d-%d", part, i)}
			if part == 0 && i == bigAt {
				r.Value = big
			}
			recs = append(recs, r)
		}
		for part := range int32(2) {
			recs = append(recs, &kgo.Record{Topic: other, Partition: part, Value: fmt.Appendf(nil, "other-%d-%d", part, i)})
		}
	}
	// Half before kmirror starts, half while it runs.
	produce(t, p.srcCl, recs[:len(recs)/2])

	httpAddr := freeAddr(t)
	k := startKmirror(t, writeConfig(t, p.flowConfig(httpAddr, "topics: [orders, other]\nsync_group_offsets: false")), httpAddr)
	produce(t, p.srcCl, recs[len(recs)/2:])

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	srcEnds := endOffsets(t, p.srcCl, topic)
	otherEnds := endOffsets(t, p.srcCl, other)
	waitFor(t, 2*time.Minute, "the other partitions and topic to be copied", func() (bool, string) {
		te, oe := endOffsets(t, p.dstCl, target), endOffsets(t, p.dstCl, "src."+other)
		return te[1] == srcEnds[1] && te[2] == srcEnds[2] && oe[0] == otherEnds[0] && oe[1] == otherEnds[1],
			fmt.Sprintf("target %v of %v, other %v of %v", te, srcEnds, oe, otherEnds)
	})
	refusedLine := func() []string {
		var out []string
		for _, l := range strings.Split(k.output(), "\n") {
			if strings.Contains(l, "level=ERROR") && strings.Contains(l, "target refuses the record") {
				out = append(out, l)
			}
		}
		return out
	}
	waitFor(t, time.Minute, "the refusal to be logged", func() (bool, string) { return len(refusedLine()) > 0, "" })
	// Over the next 20 s: one error line, no record of partition 0 past
	// the refused one, no repeats on the target.
	time.Sleep(20 * time.Second)
	lines := refusedLine()
	t.Logf("refusal error lines in 20 s: %d", len(lines))
	if len(lines) != 1 {
		t.Errorf("want exactly 1 refusal error line, got %d:\n%s", len(lines), strings.Join(lines, "\n"))
	} else {
		for _, want := range []string{"topic=orders", "partition=0", "offset=" + strconv.Itoa(bigAt), "reason=", "MESSAGE_TOO_LARGE"} {
			if !strings.Contains(lines[0], want) {
				t.Errorf("refusal line lacks %q: %s", want, lines[0])
			}
		}
	}
	_, body, err := k.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	stopped, _ := metricValue(body, `kmirror_partitions_stopped{flow="e2e"}`)
	t.Logf("kmirror_partitions_stopped = %v", stopped)
	if stopped != 1 {
		t.Errorf("kmirror_partitions_stopped = %v, want 1", stopped)
	}
	if _, status, err := k.get("/api/flows"); err != nil || !regexp.MustCompile(`"Offset":\s*`+strconv.Itoa(bigAt)+`\b`).MatchString(status) {
		t.Errorf("status API does not show the stopped partition at offset %d (err %v): %s", bigAt, err, status)
	}

	srcRecs, err := verify.ReadAll(ctx, p.srcCl, topic)
	if err != nil {
		t.Fatal(err)
	}
	tgtRecs, err := verify.ReadAll(ctx, p.dstCl, target)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("partition 0: %d records on the target while stopped, want %d", len(tgtRecs[0]), bigAt)
	if len(tgtRecs[0]) != bigAt {
		t.Errorf("target partition 0 holds %d records, want exactly the %d before the refused one", len(tgtRecs[0]), bigAt)
	}
	samePrefix(t, "partition 0 while stopped", srcRecs[0], tgtRecs[0])
	for part := int32(1); part < 3; part++ {
		if len(tgtRecs[part]) != len(srcRecs[part]) {
			t.Errorf("partition %d: target %d records, source %d", part, len(tgtRecs[part]), len(srcRecs[part]))
		}
		samePrefix(t, fmt.Sprintf("partition %d", part), srcRecs[part], tgtRecs[part])
	}
	rep, err := verify.Compare(ctx, p.srcCl, p.dstCl, []verify.Pair{{Source: other, Target: "src." + other}})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Errorf("topic %s differs on the target: %+v", other, rep.Topics)
	}

	// With a dead-letter topic, the record goes there and the partition
	// goes on.
	k.stop()
	k = startKmirror(t, writeConfig(t, p.flowConfig(httpAddr,
		"topics: [orders, other]\nsync_group_offsets: false\ndead_letter_topic: "+dlq)), httpAddr)
	waitFor(t, 2*time.Minute, "partition 0 to go on past the refused record", func() (bool, string) {
		te := endOffsets(t, p.dstCl, target)
		return te[0] == srcEnds[0]-1, fmt.Sprintf("target partition 0 end %d, want %d", te[0], srcEnds[0]-1)
	})
	tgtRecs, err = verify.ReadAll(ctx, p.dstCl, target)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]*kgo.Record(nil), srcRecs[0][:bigAt]...), srcRecs[0][bigAt+1:]...)
	if len(tgtRecs[0]) != len(want) {
		t.Errorf("target partition 0 holds %d records, want %d (the source minus the refused record)", len(tgtRecs[0]), len(want))
	}
	samePrefix(t, "partition 0 with the dead-letter topic", want, tgtRecs[0])

	dead, err := verify.ReadAll(ctx, p.dstCl, dlq)
	if err != nil {
		t.Fatal(err)
	}
	var all []*kgo.Record
	for _, rs := range dead {
		all = append(all, rs...)
	}
	if len(all) != 1 {
		t.Fatalf("dead-letter topic holds %d records, want 1", len(all))
	}
	d := all[0]
	headers := map[string]string{}
	for _, h := range d.Headers {
		headers[h.Key] = string(h.Value)
	}
	t.Logf("dead-letter record: %d value bytes, headers source=%s/%s@%s error=%q", len(d.Value),
		headers["kmirror.source.topic"], headers["kmirror.source.partition"], headers["kmirror.source.offset"], headers["kmirror.error"])
	if string(d.Value) != string(big) || string(d.Key) != fmt.Sprintf("k%d", bigAt) {
		t.Errorf("dead-letter record has a different key or value than the refused one")
	}
	if headers["kmirror.source.topic"] != topic || headers["kmirror.source.partition"] != "0" ||
		headers["kmirror.source.offset"] != strconv.Itoa(bigAt) || !strings.Contains(headers["kmirror.error"], "MESSAGE_TOO_LARGE") {
		t.Errorf("dead-letter headers = %v", headers)
	}
	waitFor(t, 30*time.Second, "the dead-letter metrics", func() (bool, string) {
		_, body, err := k.get("/metrics")
		if err != nil {
			return false, err.Error()
		}
		n, _ := metricValue(body, `kmirror_dead_letter_records_total{flow="e2e",topic="orders"}`)
		s, _ := metricValue(body, `kmirror_partitions_stopped{flow="e2e"}`)
		return n == 1 && s == 0, fmt.Sprintf("dead-lettered %v, stopped %v", n, s)
	})
}

// samePrefix checks that got equals the first len(got) records of want,
// field by field, in order.
func samePrefix(t *testing.T, what string, want, got []*kgo.Record) {
	t.Helper()
	if len(got) > len(want) {
		t.Errorf("%s: target holds %d records, more than the %d expected", what, len(got), len(want))
		return
	}
	for i, r := range got {
		if diff := verify.Diff(want[i], r); diff != "" {
			t.Errorf("%s: target record %d differs from source (order broken?): %s", what, i, diff)
			return
		}
	}
}
