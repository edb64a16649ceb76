// Package logread reads a stretch of one partition's log to a known end:
// kmirror's own state topics (progress, offset map, checkpoints, failover
// records) and the records a restarted flow compares on both clusters.
//
// A read stops only when it has seen the record just before the end it
// was given (transaction markers count: they are kept), when the
// partition's last stable offset shows that nothing more is readable yet,
// or when the caller has enough. A quiet poll never ends a read: a slow
// broker delays the reader, it never makes it believe the log is shorter
// than it is. Every fetch error is returned; a read that fails returns no
// partial result to act on.
package logread

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Range is the part of one partition to read: offsets [From, End).
type Range struct {
	Topic     string
	Partition int32
	From, End int64
}

func (r Range) String() string {
	return fmt.Sprintf("%s/%d [%d, %d)", r.Topic, r.Partition, r.From, r.End)
}

// Options tune a read.
type Options struct {
	// ReadUncommitted returns records of open and aborted transactions
	// too. By default a read is read_committed: it returns committed
	// records only, and ends at the last stable offset when that is
	// below End.
	ReadUncommitted bool
	// MaxFetchBytes bounds one fetch response of the read, and so the
	// memory it holds: the reader keeps at most the fetch being visited
	// and one fetched ahead. A record batch larger than the bound is still
	// fetched whole. 0 keeps the options of the client read with.
	MaxFetchBytes int32
	// WaitStable makes a read_committed read wait for the transactions
	// open before End to end, instead of ending at the last stable
	// offset: it returns every record committed before End, so that a
	// writer's transaction committed or aborted just now is not missed.
	// A transaction whose writer died ends when the brokers abort it
	// (its transaction timeout): the read waits for that, within ctx.
	WaitStable bool
}

// Visit is called with each record of the range in offset order; a
// transaction marker is passed too (r.Attrs.IsControl()). Returning false
// ends the read early, without error.
type Visit func(r *kgo.Record) bool

// Read reads r with a consumer built from the options of cl (the cluster
// connection and security settings), calling visit for every record. A
// range whose start was deleted (retention, DeleteRecords) is an error
// wrapping kerr.OffsetOutOfRange: the caller decides what a gap means.
func Read(ctx context.Context, cl *kgo.Client, r Range, o Options, visit Visit) error {
	if !o.ReadUncommitted && !o.WaitStable {
		// Records past the last stable offset are not readable until
		// their transaction ends: the read ends there.
		stable, err := lastStable(ctx, cl, r.Topic, r.Partition)
		if err != nil {
			return fmt.Errorf("reading %s: %w", r, err)
		}
		r.End = min(r.End, stable)
	}
	if r.End <= r.From {
		return nil
	}
	opts := append(slices.Clone(cl.Opts()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{r.Topic: {r.Partition: kgo.NewOffset().At(r.From)}}),
		kgo.KeepControlRecords(),
		// A start that is gone must be reported, not silently moved.
		kgo.ConsumeResetOffset(kgo.NoResetOffset()),
	)
	if !o.ReadUncommitted {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	if o.MaxFetchBytes > 0 {
		opts = append(opts, kgo.FetchMaxBytes(o.MaxFetchBytes), kgo.FetchMaxPartitionBytes(o.MaxFetchBytes))
	}
	reader, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("reading %s: %w", r, err)
	}
	defer reader.Close()
	next := r.From
	for {
		fetches := reader.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("reading %s: stopped at offset %d: %w", r, next, err)
		}
		var ferr error
		fetches.EachError(func(_ string, _ int32, err error) {
			if ferr == nil {
				ferr = err
			}
		})
		if ferr != nil {
			return fmt.Errorf("reading %s at offset %d: %w", r, next, ferr)
		}
		stop := false
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			for _, rec := range fp.Records {
				if stop || rec.Offset < next {
					continue
				}
				if rec.Offset >= r.End {
					stop = true
					return
				}
				next = rec.Offset + 1
				if !visit(rec) || next >= r.End {
					stop = true
					return
				}
			}
			// Read committed: records at and past the last stable offset
			// are not returned until their transaction ends.
			// (With WaitStable the read goes on: the transaction markers
			// at or past End end it.)
			if !o.ReadUncommitted && !o.WaitStable && fp.LastStableOffset >= 0 && next >= fp.LastStableOffset && fp.LastStableOffset < r.End {
				stop = true
			}
		})
		if stop {
			return nil
		}
	}
}

// ReadTopic reads every partition of topic from its start to the end
// offsets listed when the read begins, partition by partition. A topic that
// does not exist reads as empty (kmirror creates its state topics on first
// use); every other failure is an error.
func ReadTopic(ctx context.Context, cl *kgo.Client, topic string, o Options, visit Visit) error {
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return fmt.Errorf("listing end offsets of %q: %w", topic, err)
	}
	if missing(ends, topic) {
		return nil
	}
	if err := ends.Error(); err != nil {
		return fmt.Errorf("listing end offsets of %q: %w", topic, err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return fmt.Errorf("listing start offsets of %q: %w", topic, err)
	}
	if err := starts.Error(); err != nil {
		return fmt.Errorf("listing start offsets of %q: %w", topic, err)
	}
	var ranges []Range
	ends.Each(func(e kadm.ListedOffset) {
		s, _ := starts.Lookup(topic, e.Partition)
		ranges = append(ranges, Range{Topic: topic, Partition: e.Partition, From: s.Offset, End: e.Offset})
	})
	slices.SortFunc(ranges, func(a, b Range) int { return int(a.Partition - b.Partition) })
	for _, r := range ranges {
		if err := Read(ctx, cl, r, o, visit); err != nil {
			return err
		}
	}
	return nil
}

// lastStable returns the partition's last stable offset: its end, unless a
// transaction is open.
func lastStable(ctx context.Context, cl *kgo.Client, topic string, partition int32) (int64, error) {
	lso, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("listing the last stable offset: %w", err)
	}
	o, ok := lso.Lookup(topic, partition)
	if !ok {
		return 0, fmt.Errorf("listing the last stable offset: %w", kerr.UnknownTopicOrPartition)
	}
	if o.Err != nil {
		return 0, fmt.Errorf("listing the last stable offset: %w", o.Err)
	}
	return o.Offset, nil
}

func missing(ends kadm.ListedOffsets, topic string) bool {
	if len(ends[topic]) == 0 {
		return true
	}
	for _, e := range ends[topic] {
		if errors.Is(e.Err, kerr.UnknownTopicOrPartition) {
			return true
		}
	}
	return false
}
