package logread

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/kfaketest"
)

func newCluster(t *testing.T) *kgo.Client {
	t.Helper()
	return kfaketest.New(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fill creates topic with partitions and writes n records to each, values
// "<partition>-<i>".
func fill(t *testing.T, cl *kgo.Client, topic string, partitions int32, n int) {
	t.Helper()
	ctx := testContext(t)
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	var recs []*kgo.Record
	for p := range partitions {
		for i := range n {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Value: []byte(strconv.Itoa(int(p)) + "-" + strconv.Itoa(i))})
		}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func TestReadTopicReadsEveryPartitionToItsEnd(t *testing.T) {
	cl := newCluster(t)
	fill(t, cl, "state", 3, 500)
	got := map[int32][]string{}
	err := ReadTopic(testContext(t), cl, "state", Options{}, func(r *kgo.Record) bool {
		got[r.Partition] = append(got[r.Partition], string(r.Value))
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	for p := range int32(3) {
		if len(got[p]) != 500 {
			t.Fatalf("partition %d: read %d records, want 500", p, len(got[p]))
		}
		for i, v := range got[p] {
			if want := strconv.Itoa(int(p)) + "-" + strconv.Itoa(i); v != want {
				t.Fatalf("partition %d record %d = %q, want %q", p, i, v, want)
			}
		}
	}
}

func TestReadTopicMissingIsEmpty(t *testing.T) {
	cl := newCluster(t)
	n := 0
	if err := ReadTopic(testContext(t), cl, "nope", Options{}, func(*kgo.Record) bool { n++; return true }); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("read %d records of a missing topic", n)
	}
}

func TestReadRange(t *testing.T) {
	cl := newCluster(t)
	fill(t, cl, "data", 1, 100)
	tests := []struct {
		name            string
		from, end       int64
		stopAfter       int
		wantFirst, want int64 // first offset read, records read
	}{
		{"middle", 10, 20, 0, 10, 10},
		{"to the end", 90, 100, 0, 90, 10},
		{"past the end is cut by the listed end", 95, 100, 0, 95, 5},
		{"empty", 50, 50, 0, -1, 0},
		{"visitor stops early", 0, 100, 7, 0, 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			first, n := int64(-1), int64(0)
			err := Read(testContext(t), cl, Range{Topic: "data", From: tc.from, End: tc.end}, Options{}, func(r *kgo.Record) bool {
				if first < 0 {
					first = r.Offset
				}
				n++
				return tc.stopAfter == 0 || n < int64(tc.stopAfter)
			})
			if err != nil {
				t.Fatal(err)
			}
			if first != tc.wantFirst || n != tc.want {
				t.Fatalf("read %d records from %d, want %d from %d", n, first, tc.want, tc.wantFirst)
			}
		})
	}
}

func TestReadDeletedStartIsAnError(t *testing.T) {
	cl := newCluster(t)
	fill(t, cl, "data", 1, 100)
	ctx := testContext(t)
	var del kadm.Offsets
	del.Add(kadm.Offset{Topic: "data", Partition: 0, At: 40})
	if _, err := kadm.NewClient(cl).DeleteRecords(ctx, del); err != nil {
		t.Fatal(err)
	}
	err := Read(ctx, cl, Range{Topic: "data", From: 10, End: 100}, Options{}, func(*kgo.Record) bool { return true })
	if !errors.Is(err, kerr.OffsetOutOfRange) {
		t.Fatalf("err = %v, want OffsetOutOfRange", err)
	}
}

func TestReadEndsOnlyAtItsEndOrWithAnError(t *testing.T) {
	cl := newCluster(t)
	fill(t, cl, "data", 1, 10)
	// A context that has time left but a reader that starts fetching
	// late must still read everything: nothing ends a read but its end.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n := 0
	if err := Read(ctx, cl, Range{Topic: "data", From: 0, End: 10}, Options{}, func(*kgo.Record) bool { n++; return true }); err != nil {
		t.Fatal(err)
	}
	if n != 10 {
		t.Fatalf("read %d, want 10", n)
	}
	// A deadline that passes before the end is an error, not a short read.
	short, cancel2 := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel2()
	time.Sleep(time.Millisecond)
	if err := Read(short, cl, Range{Topic: "data", From: 0, End: 10}, Options{}, func(*kgo.Record) bool { return true }); err == nil {
		t.Fatal("a read cut short by its deadline returned no error")
	}
}

// TestReadWaitStableWaitsForOpenTransactions shows that a read_committed
// read with WaitStable does not end at the last stable offset: it returns
// the records of a transaction open when the read began once that
// transaction commits, and passes over one that aborts.
func TestReadWaitStableWaitsForOpenTransactions(t *testing.T) {
	for _, commit := range []bool{true, false} {
		t.Run(map[bool]string{true: "commit", false: "abort"}[commit], func(t *testing.T) {
			c := kfaketest.Cluster(t)
			cl := kfaketest.Client(t, c, kgo.RecordPartitioner(kgo.ManualPartitioner()))
			fill(t, cl, "state", 1, 3)
			txn := kfaketest.Client(t, c, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionalID("writer"))
			ctx := testContext(t)
			if err := txn.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			if err := txn.ProduceSync(ctx, &kgo.Record{Topic: "state", Value: []byte("in-txn")}).FirstErr(); err != nil {
				t.Fatal(err)
			}
			type result struct {
				got []string
				err error
			}
			done := make(chan result, 1)
			go func() {
				var got []string
				err := ReadTopic(ctx, cl, "state", Options{WaitStable: true}, func(r *kgo.Record) bool {
					if !r.Attrs.IsControl() {
						got = append(got, string(r.Value))
					}
					return true
				})
				done <- result{got, err}
			}()
			select {
			case r := <-done:
				t.Fatalf("read ended with a transaction open: %v, %v", r.got, r.err)
			case <-time.After(500 * time.Millisecond):
			}
			if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
				t.Fatal(err)
			}
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			want := []string{"0-0", "0-1", "0-2"}
			if commit {
				want = append(want, "in-txn")
			}
			if !slices.Equal(r.got, want) {
				t.Fatalf("read %v, want %v", r.got, want)
			}
		})
	}
}
