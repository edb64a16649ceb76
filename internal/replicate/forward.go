package replicate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/batch"
	"github.com/kmirror/kmirror/internal/batchfetch"
	"github.com/kmirror/kmirror/internal/batchwrite"
	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/retry"
)

// Batch pass-through: a flow whose records need not change (no header
// added, no filter) reads its source as record batches (batchfetch) and
// writes each batch the target can take as it is (batch.Plan) unchanged
// but for the producer fields (batchwrite): no record is decoded, nothing
// is compressed again. A batch that cannot be passed through (compacted,
// broker timestamps, another codec wanted, a partition being retried
// record by record or fenced) is decoded and its records go the usual
// way, through the target client's producer, in order with the batches
// around it: each write, batch or record, is sent only once every earlier
// write of its partition was answered without failure (the writer's gate,
// and the record's orderGate).
//
// A batch is one write: its records' offset-map run, position and
// acknowledgement move together.

// Fallback reasons besides batch.Plan's.
const (
	fallbackPartial = "partial"  // the position is inside the batch
	fallbackRetry   = "retry"    // the partition is written record by record after a refusal
	fallbackFence   = "fence"    // earlier owners are fenced by record writes first
	fallbackSeq     = "sequence" // the target refused the writer's sequence for the partition
)

// Forward configures batch pass-through (Options.Forward).
type Forward struct {
	// Fetcher reads the source; it must be used by this replicator
	// alone.
	Fetcher *batchfetch.Fetcher
	// Writer writes batches to the target as Producer.
	Writer *batchwrite.Writer
	// Producer is the Writer's producer (Options.Producer of
	// batchwrite): it is stored as a writer of every partition before
	// the partition's first write, so that a successor fences it.
	Producer progress.Producer
	// Target is what a batch must be to be written as it is.
	Target batch.Target
}

// pollBatches is pollLoop for a replicator that reads record batches.
func (r *Replicator) pollBatches(ctx context.Context) {
	fetchErrLog := retry.Throttle{Every: 10 * time.Second}
	passed := map[string]prometheus.Counter{}
	for ctx.Err() == nil {
		pollCtx, done := r.pollContext(ctx, false, r.recoverFailed(ctx))
		fetched := r.opts.Forward.Fetcher.Poll(pollCtx)
		done()
		if ctx.Err() != nil {
			return
		}
		for _, fd := range fetched {
			p := r.lookup(fd.Topic, fd.Partition)
			if p == nil {
				continue
			}
			if fd.Err != nil {
				r.batchFetchFailed(ctx, p, fd.Err, &fetchErrLog)
				continue
			}
			if !r.takeFetched(p, fd.HighWatermark) {
				continue
			}
			if len(fd.Batches) > 0 {
				// As the consumer's fetch: records are gone only below the
				// log start (a batch starting past the position may follow
				// offsets compaction emptied), and those of the first batch
				// below the offset fetched are not read.
				first := max(fd.Batches[0].BaseOffset(), fd.Offset)
				r.checkDeleted(p, kgo.FetchTopicPartition{Topic: fd.Topic, FetchPartition: kgo.FetchPartition{
					Partition: fd.Partition, LogStartOffset: min(fd.LogStartOffset, first)}})
			}
			c := passed[fd.Topic]
			if c == nil {
				c = r.opts.Metrics.BatchesPassedThrough.WithLabelValues(r.opts.Flow, fd.Topic)
				passed[fd.Topic] = c
			}
			r.feedBatches(ctx, p, fd, c, &fetchErrLog)
		}
	}
}

// feedBatches writes the fetched batches of p in order: each passed
// through, dropped, or decoded and fed record by record.
func (r *Replicator) feedBatches(ctx context.Context, p *partition, fd batchfetch.Fetched, passed prometheus.Counter, errLog *retry.Throttle) {
	var aborted *batch.Aborted
	if len(fd.Aborted) > 0 {
		aborted = batch.NewAborted(fd.Aborted)
	}
	// A partition stopped at a batch too large to decompress goes on
	// once a batch of it is read: the large one was deleted.
	read := false
	defer func() {
		if read {
			r.readAgain(p)
		}
	}()
	for _, b := range fd.Batches {
		if p.halted.Load() || p.probing {
			return // the rewind fetches the rest again
		}
		verdict, reason := batch.Plan(b, r.opts.Forward.Target, aborted)
		if b.NextOffset() <= p.fedNext {
			continue // fed before (fetched whole again)
		}
		if verdict == batch.Forward {
			switch {
			case b.BaseOffset() < p.fedNext:
				reason = fallbackPartial
			case p.probeOne || p.probingStreak():
				reason = fallbackRetry
			case p.unfenced.Load():
				reason = fallbackFence
			case p.noForward.Load():
				reason = fallbackSeq
			}
			if reason != "" {
				verdict = batch.Decode
			}
		}
		switch verdict {
		case batch.Drop:
			// A transaction marker, or a batch of an aborted transaction
			// (whose marker follows): no record to copy.
			p.fedNext = b.NextOffset()
			if b.Control() {
				r.skipControl(p, b.LastOffset(), b.LeaderEpoch())
			}
		case batch.Decode:
			r.opts.Metrics.BatchesFallback.WithLabelValues(r.opts.Flow, p.id.Topic, reason).Inc()
			if !r.batchesAnswered(p) {
				// Fetched again once they are (a record sent now could
				// land before them).
				r.retryFrom(p, max(p.fedNext, b.BaseOffset()))
				return
			}
			recs, err := r.decodeBatch(p.id, b, p.fedNext)
			var tooLarge *kgo.ErrDecompressTooLarge
			switch {
			case errors.As(err, &tooLarge):
				// Past the flow's bound on one batch: stopped there, as
				// the consumer's fetch would be.
				r.batchTooLarge(tooLarge)
				return
			case err != nil:
				// A batch the client cannot read: stop here, with the
				// error, as a failed fetch does.
				r.batchFetchFailed(ctx, p, err, errLog)
				return
			}
			read = true
			r.feed(ctx, p, recs)
			if p.fedNext < b.NextOffset() && !p.halted.Load() && !p.probing {
				// Records the decoder left out (none normally): the
				// position moves past them like past a marker.
				p.fedNext = b.NextOffset()
				r.skipControl(p, b.LastOffset(), b.LeaderEpoch())
			}
		default:
			read = true
			passed.Inc()
			r.forward(ctx, p, b)
		}
	}
}

// forward writes batch b of p as it is; it waits while the batches not yet
// answered fill the writer's buffer, or until ctx ends.
func (r *Replicator) forward(ctx context.Context, p *partition, b batch.Batch) {
	after := p.produced.Add(1) - 1
	src, last, n, epoch := b.BaseOffset(), b.LastOffset(), int64(b.NumRecords()), b.LeaderEpoch()
	ts := time.UnixMilli(b.MaxTimestamp())
	size := int64(len(b))
	p.fedNext = b.NextOffset()
	p.inflight.Add(1)
	p.forwarding.Add(1)
	r.notePending(p, b.LastOffset(), ts, size)
	gate := func() (send, fail bool) {
		if p.halted.Load() {
			return false, true
		}
		return p.settled.Load() >= after, false
	}
	prod := r.opts.Forward.Producer
	r.opts.Forward.Writer.Write(ctx, p.target, p.id.Partition, b, gate, func(tgt int64, err error) {
		defer p.forwarding.Add(-1)
		if err != nil {
			switch {
			case errors.Is(err, batchwrite.ErrBehindFailed):
				err = fmt.Errorf("%w: %w", errOrderGate, err)
			case errors.Is(err, batchwrite.ErrClosed):
				err = fmt.Errorf("%w: %w", context.Canceled, err)
			case errors.Is(err, batchwrite.ErrSequence):
				// The partition's next writes go record by record.
				p.noForward.Store(true)
			}
			r.writeFailed(p, src, nil, err)
			if permanent(produceErrorKind(err)) {
				// Refused as too large or invalid: written again record by
				// record, each alone up to this batch's last.
				p.mu.Lock()
				p.probeEnd = max(p.probeEnd, last)
				p.mu.Unlock()
			}
			return
		}
		r.ackedRun(p, src, n, epoch, ts, size, tgt, prod)
	})
}

// batchesAnswered waits up to gateWait until every batch of p handed to
// the batch writer was answered, and reports whether they were. Records
// go through the target client's producer, which sends a record right
// behind its own earlier ones still in flight without asking its order
// gate: the records of a decoded batch are handed to it only once the
// batches before them were answered.
func (r *Replicator) batchesAnswered(p *partition) bool {
	deadline := time.Now().Add(gateWait)
	for p.forwarding.Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Microsecond)
	}
	return true
}

// retryFrom has partition p fetched again from source offset at, once its
// writes in flight were answered, as after a failed write that was not
// sent.
func (r *Replicator) retryFrom(p *partition, at int64) {
	p.mu.Lock()
	p.halted.Store(true)
	if !p.failed || at < p.failedAt {
		p.failedAt = at
	}
	p.failed = true
	p.retryAt = time.Now().Add(50 * time.Millisecond)
	p.mu.Unlock()
	r.wake()
}

// probingStreak reports whether the partition's records are written one
// by one after the target refused some as too large or invalid.
func (p *partition) probingStreak() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.probe
}

// decodeBatch returns the records of b from offset from on, as the
// consumer would, decompressed within the source client's bound on one
// batch (kgo.MaxDecompressBatchBytes).
func (r *Replicator) decodeBatch(id progress.Partition, b batch.Batch, from int64) ([]*kgo.Record, error) {
	d, ok := r.opts.Source.OptValue(kgo.WithDecompressor).(kgo.Decompressor)
	if !ok || d == nil {
		d = kgo.DefaultDecompressor()
	}
	fp, _ := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
		Topic: id.Topic, Partition: id.Partition, Offset: from, KeepControlRecords: true,
	}, &kmsg.FetchResponseTopicPartition{Partition: id.Partition, HighWatermark: b.NextOffset(), RecordBatches: b}, d, nil)
	if fp.Err != nil {
		return nil, fmt.Errorf("decoding the batch at offset %d of %s: %w", b.BaseOffset(), id, fp.Err)
	}
	return fp.Records, nil
}

// batchFetchFailed handles a partition the fetcher stopped at an error.
// Offsets out of range are the consumer's reset: below the log start the
// records between were deleted (counted when the fetch from the log start
// returns), past the end the source was truncated below the position
// (copied again from the end as new data). Any other error is logged and
// retried after a backoff.
func (r *Replicator) batchFetchFailed(ctx context.Context, p *partition, err error, errLog *retry.Throttle) {
	if errors.Is(err, kerr.OffsetOutOfRange) {
		start, end, lerr := r.sourceBounds(ctx, p.id)
		if lerr == nil {
			switch {
			case p.fedNext < start:
				r.src.seek(p.id.Topic, p.id.Partition, start)
				return
			case p.fedNext > end:
				r.sourceTruncated(p, end)
				return
			}
		}
	}
	r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, fetchErrorKind(err)).Inc()
	err = r.opts.SourceAccess.Denied(kafka.OpRead, kafka.ResTopic, p.id.Topic, err)
	if errLog.Allow() {
		r.opts.Logger.Error("fetching from source failed; retrying", "topic", p.id.Topic, "partition", p.id.Partition, "err", err)
	}
	next := p.fedNext
	time.AfterFunc(time.Second, func() { r.src.seek(p.id.Topic, p.id.Partition, next) })
}

// sourceBounds returns the source partition's log start and end offsets.
func (r *Replicator) sourceBounds(ctx context.Context, id progress.Partition) (int64, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	adm := kadm.NewClient(r.opts.Source)
	starts, err := adm.ListStartOffsets(ctx, id.Topic)
	if err != nil {
		return 0, 0, err
	}
	ends, err := adm.ListEndOffsets(ctx, id.Topic)
	if err != nil {
		return 0, 0, err
	}
	s, ok1 := starts.Lookup(id.Topic, id.Partition)
	e, ok2 := ends.Lookup(id.Topic, id.Partition)
	if !ok1 || !ok2 || s.Err != nil || e.Err != nil {
		return 0, 0, fmt.Errorf("listing the offsets of %s: %w", id, errors.Join(s.Err, e.Err))
	}
	return s.Offset, e.Offset, nil
}

// waitBatchesAnswered waits until every write of every partition was
// answered, or ctx ends.
func (r *Replicator) waitBatchesAnswered(ctx context.Context) error {
	var parts []*partition
	r.each(func(p *partition) { parts = append(parts, p) })
	if !waitAnswered(ctx, parts) {
		return ctx.Err()
	}
	return nil
}
