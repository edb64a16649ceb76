package flow

import (
	"bytes"
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/logread"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/replicate"
	"github.com/kmirror/kmirror/internal/resume"
)

// resumePoint is a stored position to check before a partition resumes,
// with the source partition's offsets now.
type resumePoint struct {
	id                     progress.Partition
	target                 string // target topic
	pos                    progress.Position
	sourceStart, sourceEnd int64
}

// resume checks a stored position against both clusters and returns the
// position to start from. It reports records the source deleted before
// they were copied. Records the target holds past the stored position were
// written by the previous run after its last progress write: those whose
// key, value, headers and timestamp match the next source records, in
// order, are skipped rather than written again; the rest are counted as
// duplicates. With provenance, the copies are compared with their header,
// records the flow drops are passed over, and so are records other
// writers put into the target partition. Source transaction markers and aborted records have no copy
// and are passed over; the comparison holds at most resume.PartitionBudget
// bytes of fetched records (four fetches of the flow's CompareFetchBytes
// when its memory budget sets them), and at most the budget's Comparisons
// partitions are compared at once.
func (r *run) resume(ctx context.Context, rp resumePoint, tgtEnds kadm.ListedOffsets, omap *offsets.Map) progress.Position {
	id, pos := rp.id, rp.pos
	te, ok := tgtEnds.Lookup(rp.target, id.Partition)
	ahead := int64(0)
	if ok && te.Err == nil && pos.TargetNext >= 0 && te.Offset > pos.TargetNext && !r.cfg.ExactlyOnce {
		// With exactly-once the position was committed in the
		// transaction of the records it covers: every committed copy is
		// before it, and what the target holds past it was aborted (or
		// written by others).
		ahead = te.Offset - pos.TargetNext
	}
	now := time.Now().UnixMilli()
	// Reading resumes at the stored position: a gap before the first
	// matched record (a transaction marker) is covered by its run.
	omap.Start(pos.SourceNext)
	if pos.SourceNext < rp.sourceStart {
		pos, ahead = r.pastDeleted(ctx, rp, ahead, omap, now)
		if pos.SourceNext < rp.sourceStart {
			r.metrics.Errors.WithLabelValues(r.cfg.Name, metrics.ErrOffsetReset).Inc()
			r.logger.Error("source deleted records before they were replicated (retention); resuming at the source's earliest offset",
				"topic", id.Topic, "partition", id.Partition, "position", pos.SourceNext, "source_start", rp.sourceStart,
				"records_lost_at_most", rp.sourceStart-pos.SourceNext)
			return pos
		}
	}
	if ahead == 0 {
		return pos
	}
	o := resume.Options{
		SourceReadUncommitted: r.cfg.Consumer.IsolationLevel == config.ReadUncommitted,
		MaxFetchBytes:         r.mem.CompareFetchBytes,
	}
	if pv := r.repl.Provenance(); pv != nil {
		// Copies carry the provenance header, dropped records have none,
		// and other writers of the target topic are not compared.
		o.Copy, o.Ours = copier(pv, rp.target), pv.Wrote
	}
	if r.compares != nil {
		// The flow's memory budget bounds the comparisons at once.
		select {
		case r.compares <- struct{}{}:
			defer func() { <-r.compares }()
		case <-ctx.Done():
			return pos
		}
	}
	res, err := resume.Match(ctx, r.src, r.tgt, id, rp.target, pos, te.Offset, rp.sourceEnd, o,
		func(p resume.Pair) { omap.Add(p.Source, p.Target, now) })
	matched := res.Matched
	if err != nil {
		r.logger.Warn("could not compare the target's records past the stored position; they will be written again",
			"topic", id.Topic, "partition", id.Partition, "err", err)
	}
	if dups := ahead - matched - res.Others; dups > 0 {
		r.metrics.Duplicates.WithLabelValues(r.cfg.Name, id.Topic).Add(float64(dups))
		r.logger.Info("target holds records written after the last stored position; they will be written again",
			"topic", id.Topic, "partition", id.Partition, "duplicates", dups)
	}
	if matched > 0 {
		r.metrics.ResumeSkipped.WithLabelValues(r.cfg.Name, id.Topic).Add(float64(matched))
		r.logger.Info("resumed past records the target already holds",
			"topic", id.Topic, "partition", id.Partition, "skipped", matched, "transaction_markers", res.Markers,
			"dropped_by_provenance", res.Dropped, "other_writers", res.Others,
			"from", pos.SourceNext, "to", res.Next.SourceNext)
		return res.Next
	}
	return pos
}

// pastDeleted handles a stored position below the source's log start
// offset when the target holds ahead records past it: the previous run
// copied them after its last progress write, and the source deleted their
// originals since, so they cannot be compared. Copies are written in
// source order by one writer, so they are the copies of the records from
// the position on; they are taken as copies of the next source offsets,
// one each (a transaction marker in the deleted range has no copy, which
// makes the loss reported later larger by one, never smaller), up to the
// log start offset. The previous run may have met the deletion itself,
// reported the loss and gone on from the log start: the target then holds
// copies of records from the log start after those of deleted records,
// found by the first record equal (key, value, timestamp) to the source's
// first record; the position goes to the log start there, and the loss is
// not reported again. It returns the position and the target records left
// past it, which the caller compares with the source as usual. Without
// this, the loss reported would include records the target holds, or the
// records from the log start would be copied twice.
func (r *run) pastDeleted(ctx context.Context, rp resumePoint, ahead int64, omap *offsets.Map, now int64) (progress.Position, int64) {
	pos := rp.pos
	if ahead <= 0 {
		return pos, ahead
	}
	jumped := r.copiesFromLogStart(ctx, rp, ahead)
	n := min(ahead, rp.sourceStart-pos.SourceNext)
	if jumped >= 0 {
		n = min(n, jumped)
	}
	for i := range n {
		omap.Add(pos.SourceNext+i, pos.TargetNext+i, now)
	}
	if n > 0 {
		r.metrics.ResumeSkipped.WithLabelValues(r.cfg.Name, rp.id.Topic).Add(float64(n))
		r.logger.Info("resumed past records the target already holds; their source records are deleted, so they were counted, not compared",
			"topic", rp.id.Topic, "partition", rp.id.Partition, "skipped", n, "from", pos.SourceNext, "to", pos.SourceNext+n)
	}
	pos.SourceNext += n
	pos.TargetNext += n
	pos.LeaderEpoch = nil
	if jumped >= 0 && jumped == n && pos.SourceNext < rp.sourceStart {
		r.logger.Info("the previous run went on from the source's log start after deleted records; resuming there (it reported the loss)",
			"topic", rp.id.Topic, "partition", rp.id.Partition, "lost_from", pos.SourceNext, "to", rp.sourceStart)
		pos.SourceNext = rp.sourceStart
	}
	return pos, ahead - n
}

// copiesFromLogStart returns how many of the ahead target records past
// the stored position come before the first one equal (key, value,
// timestamp) to the source's first record at or after its log start, or
// -1 if none is (or they cannot be read).
func (r *run) copiesFromLogStart(ctx context.Context, rp resumePoint, ahead int64) int64 {
	if rp.sourceEnd <= rp.sourceStart {
		return -1
	}
	var first *kgo.Record
	err := logread.Read(ctx, r.src, logread.Range{Topic: rp.id.Topic, Partition: rp.id.Partition, From: rp.sourceStart, End: rp.sourceEnd},
		logread.Options{ReadUncommitted: r.cfg.Consumer.IsolationLevel == config.ReadUncommitted}, func(rec *kgo.Record) bool {
			if rec.Attrs.IsControl() {
				return true
			}
			first = rec
			return false
		})
	if err != nil || first == nil {
		return -1
	}
	found := int64(-1)
	var i int64
	err = logread.Read(ctx, r.tgt, logread.Range{Topic: rp.target, Partition: rp.id.Partition, From: rp.pos.TargetNext, End: rp.pos.TargetNext + ahead},
		logread.Options{}, func(rec *kgo.Record) bool {
			if rec.Attrs.IsControl() {
				return true
			}
			if bytes.Equal(rec.Key, first.Key) && bytes.Equal(rec.Value, first.Value) && rec.Timestamp.Equal(first.Timestamp) {
				found = i
				return false
			}
			i++
			return true
		})
	if err != nil {
		return -1
	}
	return found
}

// copier returns, for the comparison at resume of source records with
// their copies on target topic target, what the flow with provenance pv
// does with a source record and the record it writes for it (key, value,
// timestamp and headers). A mark not proven or disproven yet is not
// waited for: the previous run decided it, which the comparison finds out
// (resume.Maybe).
func copier(pv *replicate.Provenance, target string) func(*kgo.Record) (*kgo.Record, resume.Kind) {
	return func(in *kgo.Record) (*kgo.Record, resume.Kind) {
		d := pv.Decide(in, target, false)
		if d.Drop != "" {
			return nil, resume.Drop
		}
		out := &kgo.Record{Key: in.Key, Value: in.Value, Headers: d.Headers, Timestamp: in.Timestamp}
		if d.Wait {
			return out, resume.Maybe
		}
		return out, resume.Write
	}
}
