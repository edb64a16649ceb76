// Package resume lets a restarted flow avoid writing again the records its
// previous run wrote after its last progress write. It compares the target
// records past the stored position with the next source records, in order,
// by key, value, headers and timestamp, and reports how many match.
//
// Only an exact, in-order match is trusted: the first difference ends the
// match, so a record another writer put into the target partition can only
// make kmirror write more (duplicates), never skip a record.
//
// Transaction markers and aborted records of the source are not copied, so
// they have no record on the target: the source is read the way the flow
// reads it (read_committed by default, markers kept) and a marker is a
// source offset that maps to no target record. The source is compared only
// up to its last stable offset, so an open transaction neither blocks the
// comparison nor lets it match records the flow could not have copied.
//
// A flow with provenance writes its copies with the provenance header and
// writes nothing for the records it drops (see replicate.Provenance):
// Options.Copy compares each source record as the flow writes it, and
// passes over the ones it drops like transaction markers. In an
// active-active topic the target partition also holds records of other
// writers (its own producers, flows from other clusters): Options.Ours
// passes over them.
//
// Both sides are streamed and compared record by record: memory does not
// grow with the number of records compared (see MaxFetchBytes).
package resume

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/logread"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/provenance"
	"github.com/kmirror/kmirror/internal/verify"
)

// MaxFetchBytes bounds one fetch of either side of a comparison, unless
// Options.MaxFetchBytes says less. Each side holds at most the fetch
// being compared and one fetched ahead, so one partition's comparison
// holds at most 4 × MaxFetchBytes of fetched records (4 MiB), plus a
// record batch larger than the bound, which is fetched whole.
// Decompressed records take more memory than the fetched bytes by the
// compression ratio.
const MaxFetchBytes = 1 << 20

// PartitionBudget is the most fetched bytes one partition's comparison
// holds at once.
const PartitionBudget = 4 * MaxFetchBytes

// idleTimeout ends a comparison whose reads made no progress for this
// long; the records not compared are written again.
const idleTimeout = 30 * time.Second

// Options tune a comparison.
type Options struct {
	// SourceReadUncommitted reads the source read_uncommitted, as a flow
	// configured with consumer.isolation_level read_uncommitted copies
	// records of aborted and open transactions too.
	SourceReadUncommitted bool
	// Copy, if set, returns what the flow does with a source record, and
	// the record it writes for it: source records it drops are passed
	// over; one it may have written or dropped (Maybe) is matched if the
	// next target record is its copy and passed over otherwise. Nil:
	// records are copied as they are.
	Copy func(*kgo.Record) (*kgo.Record, Kind)
	// Ours, if set, reports whether a target record was written by the
	// flow; the others are passed over. Nil: every target record past the
	// position was.
	Ours func(*kgo.Record) bool
	// MaxFetchBytes, if positive, bounds one fetch of either side in
	// place of MaxFetchBytes (the flow's memory budget sets it).
	MaxFetchBytes int32
}

// Kind is what a flow does with a source record.
type Kind int8

const (
	// Write: the flow writes the record's copy.
	Write Kind = iota
	// Drop: the flow writes nothing for it.
	Drop
	// Maybe: either; which one is not known yet (a provenance mark not
	// proven or disproven yet). The previous run decided, in source
	// order: its copy is the next target record of the flow if it wrote
	// one, so the record is matched when the next target record is its
	// copy, and passed over otherwise. Passing over never skips a record
	// the previous run did not write: a later record matches only if the
	// previous run went past this one, and where nothing later matches
	// the position stays before it. The provenance header is left out of
	// that comparison: the previous run may have proven the mark and
	// extended the path, or not.
	Maybe
)

// Pair is a source record's offset and the target offset of its copy.
type Pair struct {
	Source, Target int64
}

// Result is what a comparison found.
type Result struct {
	// Matched is the number of target records found to be copies of the
	// next source records.
	Matched int64
	// Markers is the number of source transaction markers passed between
	// matched records.
	Markers int64
	// Dropped is the number of source records passed over because the
	// flow writes nothing for them (Options.Copy).
	Dropped int64
	// Others is the number of target records passed over because another
	// writer wrote them (Options.Ours).
	Others int64
	// Next is the position just after the last match: where the flow
	// resumes.
	Next progress.Position
}

// Match compares the target partition's records in [pos.TargetNext,
// targetEnd) with the source partition's records from pos.SourceNext on
// (up to sourceEnd and the source's last stable offset). It calls onMatch
// with each matching pair, from the start and in order, and returns the
// number matched and the position just after the last match. An error
// says why not every target record was matched; the result holds what was.
func Match(ctx context.Context, src, tgt *kgo.Client, id progress.Partition, target string,
	pos progress.Position, targetEnd, sourceEnd int64, o Options, onMatch func(Pair)) (Result, error) {
	res := Result{Next: pos}
	if targetEnd <= pos.TargetNext || sourceEnd <= pos.SourceNext {
		return res, nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	idle := time.AfterFunc(idleTimeout, func() {
		cancel(fmt.Errorf("no record read for %s", idleTimeout))
	})
	defer idle.Stop()

	fetchBytes := int32(MaxFetchBytes)
	if o.MaxFetchBytes > 0 {
		fetchBytes = o.MaxFetchBytes
	}
	var wg sync.WaitGroup
	tgtSide := open(ctx, &wg, tgt, logread.Range{Topic: target, Partition: id.Partition, From: pos.TargetNext, End: targetEnd},
		logread.Options{MaxFetchBytes: fetchBytes})
	srcSide := open(ctx, &wg, src, logread.Range{Topic: id.Topic, Partition: id.Partition, From: pos.SourceNext, End: sourceEnd},
		logread.Options{MaxFetchBytes: fetchBytes, ReadUncommitted: o.SourceReadUncommitted})
	defer func() {
		// Stop both readers and wait for them: nothing outlives Match.
		cancel(nil)
		srcSide.drain()
		tgtSide.drain()
		wg.Wait()
	}()

	for {
		t, ok := tgtSide.next(nil)
		if !ok {
			if err := tgtSide.failure(ctx); err != nil {
				return res, fmt.Errorf("reading target %s/%d after %d matching records: %w", target, id.Partition, res.Matched, err)
			}
			if want := targetEnd - pos.TargetNext - res.Others; res.Matched < want {
				return res, fmt.Errorf("matched %d of %d records: the target's records past offset %d are not readable", res.Matched, want, res.Next.TargetNext)
			}
			return res, nil
		}
		idle.Reset(idleTimeout)
		if o.Ours != nil && !o.Ours(t) {
			res.Others++
			continue
		}
		s, want, ok := srcSide.nextCopy(o.Copy, t, &res)
		if !ok {
			if err := srcSide.failure(ctx); err != nil {
				return res, fmt.Errorf("reading source %s after %d matching records: %w", id, res.Matched, err)
			}
			return res, fmt.Errorf("target offset %d and later have no source record to match before the source's end or last stable offset (%d matching records)", t.Offset, res.Matched)
		}
		idle.Reset(idleTimeout)
		if d := verify.Diff(want, t); d != "" {
			return res, fmt.Errorf("source offset %d and target offset %d differ (%s) after %d matching records", s.Offset, t.Offset, d, res.Matched)
		}
		onMatch(Pair{Source: s.Offset, Target: t.Offset})
		res.Matched++
		res.Next.SourceNext = s.Offset + 1
		res.Next.TargetNext = t.Offset + 1
		epoch := s.LeaderEpoch
		res.Next.LeaderEpoch = &epoch
	}
}

// side streams one partition's records from a reader goroutine.
type side struct {
	recs chan *kgo.Record
	err  error // set before recs is closed
}

func open(ctx context.Context, wg *sync.WaitGroup, cl *kgo.Client, r logread.Range, o logread.Options) *side {
	s := &side{recs: make(chan *kgo.Record)}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(s.recs)
		s.err = logread.Read(ctx, cl, r, o, func(rec *kgo.Record) bool {
			select {
			case s.recs <- rec:
				return true
			case <-ctx.Done():
				return false
			}
		})
	}()
	return s
}

// next returns the side's next record that is not a transaction marker,
// calling onMarker for each marker passed; false when the side ended.
func (s *side) next(onMarker func()) (*kgo.Record, bool) {
	for rec := range s.recs {
		if rec.Attrs.IsControl() {
			if onMarker != nil {
				onMarker()
			}
			continue
		}
		return rec, true
	}
	return nil, false
}

// nextCopy returns the side's next source record the flow writes a copy
// of, and that copy (copyOf nil: the record itself), counting in res the
// markers and the records the flow drops passed on the way. A record the
// flow may have written or dropped (Maybe) is returned if t, the next
// target record of the flow, is its copy, and passed over otherwise.
func (s *side) nextCopy(copyOf func(*kgo.Record) (*kgo.Record, Kind), t *kgo.Record, res *Result) (rec, want *kgo.Record, ok bool) {
	for {
		rec, ok := s.next(func() { res.Markers++ })
		if !ok {
			return nil, nil, false
		}
		if copyOf == nil {
			return rec, rec, true
		}
		want, kind := copyOf(rec)
		switch {
		case kind == Write:
			return rec, want, true
		case kind == Maybe && verify.DiffIgnoring(want, t, provenance.Header) == "":
			// Written: compared with the header the previous run wrote.
			want = cloneWithHeader(want, t)
			return rec, want, true
		}
		res.Dropped++
	}
}

// cloneWithHeader returns want with the provenance header of t.
func cloneWithHeader(want, t *kgo.Record) *kgo.Record {
	out := *want
	out.Headers = slices.Clone(t.Headers)
	return &out
}

// failure is why an ended side ended early, or nil if it read its range.
func (s *side) failure(ctx context.Context) error {
	if s.err != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			return fmt.Errorf("%w (%w)", s.err, cause)
		}
		return s.err
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return nil
}

func (s *side) drain() {
	for range s.recs {
	}
}
