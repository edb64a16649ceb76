package e2e

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestExactlyOnceDeadLetter copies, with exactly_once and a dead-letter
// topic, partitions in which every 25th record is larger than the target
// topic's max.message.bytes, and kills kmirror with SIGKILL three times at
// random moments while it writes refused records to the dead-letter
// topic (restarting it each time). A read_committed consumer then sees
// each refused record exactly once in the dead-letter topic, and every
// other record exactly once on the target, in source order: a refused
// record and the position past it are committed together.
func TestExactlyOnceDeadLetter(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	const (
		topic, target = "orders", "src.orders"
		dlq           = "kmirror.dead-letters"
		partitions    = 3
		perPartition  = 300
		every         = 25
	)
	createTopic(t, p.srcCl, topic, partitions, nil)
	createTopic(t, p.dstCl, target, partitions, map[string]string{"max.message.bytes": "20000"})
	var recs []*kgo.Record
	refused := map[string]bool{} // values of refused records
	for i := range perPartition {
		for part := range int32(partitions) {
			v := fmt.Appendf(nil, "orders-%d-%d", part, i)
			if i%every == every-1 {
				big := make([]byte, 50_000) // random: compression cannot shrink it under the limit
				if _, err := crand.Read(big); err != nil {
					t.Fatal(err)
				}
				v = append(v, big...)
				refused[string(v)] = true
			}
			recs = append(recs, &kgo.Record{Topic: topic, Partition: part, Key: []byte(strconv.Itoa(i)), Value: v})
		}
	}
	produce(t, p.srcCl, recs)

	httpAddr := freeAddr(t)
	cfg := writeConfig(t, p.flowConfig(httpAddr, "topics: [orders]\nsync_group_offsets: false\nexactly_once: true\ndead_letter_topic: "+dlq+"\nownership_timeout: 6s"))
	k := startKmirror(t, cfg, httpAddr)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for kill := range 3 {
		// Kill once some refused records were written, at a random
		// moment within the next second.
		n0 := sum(endOffsets(t, p.dstCl, dlq))
		waitFor(t, 2*time.Minute, "more records in the dead-letter topic", func() (bool, string) {
			n := sum(endOffsets(t, p.dstCl, dlq))
			return n > n0, fmt.Sprintf("dead-letter end offset %d", n)
		})
		time.Sleep(time.Duration(rng.IntN(1000)) * time.Millisecond)
		t.Logf("SIGKILL %d with the dead-letter topic's end offset at %d", kill+1, sum(endOffsets(t, p.dstCl, dlq)))
		k.kill()
		k = startKmirror(t, cfg, httpAddr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	wantCopies := perPartition - perPartition/every
	var got map[int32][]*kgo.Record
	var dead []*kgo.Record
	waitFor(t, 3*time.Minute, "every record copied or dead-lettered, as a read_committed consumer sees it", func() (bool, string) {
		got = readLog(t, ctx, p.dstCl, target)
		dead = nil
		for _, rs := range readLog(t, ctx, p.dstCl, dlq) {
			dead = append(dead, rs...)
		}
		n := 0
		for _, rs := range got {
			n += len(rs)
		}
		return n >= partitions*wantCopies && len(dead) >= len(refused),
			fmt.Sprintf("target %d of %d, dead-letter %d of %d", n, partitions*wantCopies, len(dead), len(refused))
	})
	txns := txnCounts(k)
	k.stop()

	seen := map[string]int{}
	for _, d := range dead {
		seen[string(d.Value)]++
	}
	bad := 0
	for v := range refused {
		if seen[v] != 1 {
			bad++
			if bad <= 5 {
				t.Errorf("refused record %.16q is %d times in the dead-letter topic, want once", v, seen[v])
			}
		}
	}
	if len(dead) != len(refused) {
		t.Errorf("dead-letter topic holds %d records, want %d (each refused record once)", len(dead), len(refused))
	}
	for part := range int32(partitions) {
		var want [][]byte
		for _, r := range recs {
			if r.Partition == part && !refused[string(r.Value)] {
				want = append(want, r.Value)
			}
		}
		rs := got[part]
		if len(rs) != len(want) {
			t.Errorf("partition %d: a read_committed consumer of the target sees %d records, want %d", part, len(rs), len(want))
		}
		for i := range min(len(rs), len(want)) {
			if !bytes.Equal(rs[i].Value, want[i]) {
				t.Errorf("partition %d, target record %d is %.24q, want %.24q (each record once, in source order)", part, i, rs[i].Value, want[i])
				break
			}
		}
	}
	t.Logf("%d refused records, each once in the dead-letter topic; %d records copied exactly once in order; transactions committed/aborted by the last instance %s",
		len(refused), partitions*wantCopies, txns)
}
