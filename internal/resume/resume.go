// Package resume lets a restarted flow avoid writing again the records its
// previous run wrote after its last progress write. It compares the target
// records past the stored position with the next source records, in order,
// by key, value, headers and timestamp, and reports how many match.
//
// Only an exact, in-order match is trusted: the first difference ends the
// match, so a record another writer put into the target partition can only
// make kmirror write more (duplicates), never skip a record.
package resume

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/verify"
)

// MaxCompare bounds how many records past the stored position are
// compared; beyond it the rest is written again and counted as duplicates.
const MaxCompare = 100_000

// readTimeout bounds the reading of each side.
const readTimeout = 30 * time.Second

// Match compares the target partition's records in [pos.TargetNext,
// targetEnd) with the source partition's records from pos.SourceNext on
// (up to sourceEnd). It returns the matching records' offsets, from the
// start and in order, and the position just after the last match.
func Match(ctx context.Context, src, tgt *kgo.Client, id progress.Partition, target string,
	pos progress.Position, targetEnd, sourceEnd int64) ([]Pair, progress.Position, error) {
	n := min(targetEnd-pos.TargetNext, MaxCompare)
	if n <= 0 || sourceEnd <= pos.SourceNext {
		return nil, pos, nil
	}
	tgtRecs, err := readRange(ctx, tgt, target, id.Partition, pos.TargetNext, targetEnd, int(n))
	if err != nil {
		return nil, pos, fmt.Errorf("reading target %s/%d: %w", target, id.Partition, err)
	}
	srcRecs, err := readRange(ctx, src, id.Topic, id.Partition, pos.SourceNext, sourceEnd, int(n))
	if err != nil {
		return nil, pos, fmt.Errorf("reading source %s: %w", id, err)
	}
	var matched []Pair
	next := pos
	for i := 0; i < len(tgtRecs) && i < len(srcRecs); i++ {
		if d := verify.Diff(srcRecs[i], tgtRecs[i]); d != "" {
			return matched, next, fmt.Errorf("source offset %d and target offset %d differ (%s) after %d matching records (read %d source, %d target)", srcRecs[i].Offset, tgtRecs[i].Offset, d, len(matched), len(srcRecs), len(tgtRecs))
		}
		matched = append(matched, Pair{Source: srcRecs[i].Offset, Target: tgtRecs[i].Offset})
		next.SourceNext = srcRecs[i].Offset + 1
		next.TargetNext = tgtRecs[i].Offset + 1
	}
	if int64(len(matched)) < n {
		return matched, next, fmt.Errorf("matched %d of %d records (read %d source, %d target)", len(matched), n, len(srcRecs), len(tgtRecs))
	}
	return matched, next, nil
}

// Pair is a source record's offset and the target offset of its copy.
type Pair struct {
	Source, Target int64
}

// readRange reads up to limit records of one partition from offset from,
// stopping at end (exclusive).
func readRange(ctx context.Context, cl *kgo.Client, topic string, partition int32, from, end int64, limit int) ([]*kgo.Record, error) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	reader, err := kgo.NewClient(append(slices.Clone(cl.Opts()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().At(from)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)...)
	if err != nil {
		return nil, err
	}
	defer reader.Close()
	var out []*kgo.Record
	for len(out) < limit {
		fetches := reader.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return out, err
		}
		if errs := fetches.Errors(); len(errs) > 0 {
			return out, errs[0].Err
		}
		last := int64(-1)
		fetches.EachRecord(func(r *kgo.Record) {
			if r.Offset < end && len(out) < limit {
				out = append(out, r)
			}
			last = r.Offset
		})
		if last >= end-1 {
			break
		}
	}
	return out, nil
}
