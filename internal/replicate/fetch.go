package replicate

import (
	"context"
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/retry"
)

const maxPollRecords = 50_000

// pollLoop fetches the source partitions and feeds their records to the
// producer, in order, until ctx ends: failed partitions are rewound and
// held ones fed once decided before each poll.
func (r *Replicator) pollLoop(ctx context.Context) {
	fetchErrLog := retry.Throttle{Every: 10 * time.Second}
	for ctx.Err() == nil {
		anyFailed := r.recoverFailed(ctx)
		anyHeld := r.releaseHeld(ctx)
		pollCtx, done := r.pollContext(ctx, anyHeld, anyFailed)
		fetches := r.opts.Source.PollRecords(pollCtx, maxPollRecords)
		done()
		if ctx.Err() != nil {
			return
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return
			}
			var loss *kgo.ErrDataLoss
			if errors.As(err, &loss) && r.sourceLostData(loss) {
				return
			}
			var tooLarge *kgo.ErrDecompressTooLarge
			if errors.As(err, &tooLarge) {
				r.batchTooLarge(tooLarge)
				return
			}
			r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, fetchErrorKind(err)).Inc()
			err = r.opts.SourceAccess.Denied(kafka.OpRead, kafka.ResTopic, topic, err)
			if fetchErrLog.Allow() {
				msg := "fetching from source failed; retrying"
				if kafka.IsDenied(err) {
					msg = "fetching from source not authorized; retrying"
				}
				r.opts.Logger.Error(msg, "topic", topic, "partition", p, "err", err)
			}
		})
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			p := r.lookup(fp.Topic, fp.Partition)
			if p == nil || !r.takeFetched(p, fp.HighWatermark) {
				return
			}
			if len(fp.Records) > 0 {
				r.readAgain(p)
			}
			r.checkDeleted(p, fp)
			r.feed(ctx, p, fp.Records)
		})
	}
}

// pollContext returns the context of the next poll of the source, and
// what ends it: a poll waits for source records until one arrives, or
// briefly while a record waits for its provenance (held) or a failed
// partition for its retry. A write that fails while the poll waits wakes
// it (wake), so the partition is retried on a quiet source too.
func (r *Replicator) pollContext(ctx context.Context, held, failed bool) (context.Context, func()) {
	var pollCtx context.Context
	var cancel context.CancelFunc
	switch {
	case held:
		pollCtx, cancel = context.WithTimeout(ctx, heldPoll)
	case failed:
		pollCtx, cancel = context.WithTimeout(ctx, 250*time.Millisecond)
	default:
		pollCtx, cancel = context.WithCancel(ctx)
	}
	r.pollMu.Lock()
	r.wakePoll = cancel
	r.pollMu.Unlock()
	return pollCtx, func() {
		r.pollMu.Lock()
		r.wakePoll = nil
		r.pollMu.Unlock()
		cancel()
	}
}

// takeFetched notes the source end offset hwm of partition p, fetched
// again, and reports whether what was fetched is to be fed: not while a
// write of p failed or is being retried alone (the partition is paused
// until the rewind fetches it again from there), nor while a record waits
// for its provenance.
func (r *Replicator) takeFetched(p *partition, hwm int64) bool {
	if hwm > 0 {
		p.hwm.Store(hwm)
	}
	if p.isFailed() || p.probing {
		if !p.paused {
			p.paused = true
			r.src.pause(p.id.Topic, p.id.Partition)
		}
		return false
	}
	return !p.halted.Load() && p.held == nil
}

// feed hands records of partition p, fetched in order, to the producer,
// or passes over those it does not write. It stops at a record whose
// provenance mark is not decided yet and holds the partition there, with
// the records after it (see hold).
func (r *Replicator) feed(ctx context.Context, p *partition, recs []*kgo.Record) {
	for i, rec := range recs {
		if p.halted.Load() || p.probing {
			return // the rewind fetches the rest again
		}
		if rec.Offset < p.fedNext {
			r.sourceTruncated(p, rec.Offset)
			return
		}
		p.fedNext = rec.Offset + 1
		if rec.Attrs.IsControl() {
			r.skipControl(p, rec.Offset, rec.LeaderEpoch)
			continue
		}
		headers := rec.Headers
		if pv := r.opts.Provenance; pv != nil {
			d := pv.Decide(rec, p.target, rec.Offset < p.unprovenTo)
			if d.Wait {
				r.hold(p, recs[i:])
				return
			}
			if d.Drop != "" {
				r.dropped(p, rec, d.Drop)
				continue
			}
			if d.Foreign && rec.Offset >= p.foreignNext {
				p.foreignNext = rec.Offset + 1
				if d.Unproven {
					p.unproven.Inc()
				} else {
					p.foreign.Inc()
				}
			}
			headers = d.Headers
		}
		if p.probeOne {
			p.probeOne, p.probing = false, true
			p.mu.Lock()
			p.probeAt = rec.Offset
			p.mu.Unlock()
		}
		r.produce(ctx, p, rec, headers)
	}
}

// heldPoll is how often a poll loop with a record waiting for its
// provenance to be decided looks again.
const heldPoll = 50 * time.Millisecond

// hold pauses partition p at recs[0], whose provenance mark is not
// decided yet: it and the records after it, fetched already, wait until
// it is (see releaseHeld).
func (r *Replicator) hold(p *partition, recs []*kgo.Record) {
	if len(p.held) == 0 || p.held[0].Offset != recs[0].Offset {
		p.heldSince = time.Now()
	}
	p.held = recs
	p.fedNext = recs[0].Offset
	if !p.paused {
		p.paused = true
		r.src.pause(p.id.Topic, p.id.Partition)
	}
}

// releaseHeld feeds the records held at every partition whose waiting
// record's mark is now decided, or has waited ProofWait (its mark then
// counts as not proven, with one log line), and fetches the partition
// again after them. It reports whether a record still waits.
func (r *Replicator) releaseHeld(ctx context.Context) bool {
	pv := r.opts.Provenance
	if pv == nil {
		return false
	}
	// Collected first, fed after: feeding takes the transaction's lock,
	// which a commit holds while it takes the replicator's (lock order:
	// transaction, then replicator).
	var holding []*partition
	r.each(func(p *partition) {
		if len(p.held) > 0 {
			holding = append(holding, p)
		}
	})
	var waiting bool
	for _, p := range holding {
		recs := p.held
		rec := recs[0]
		if p.isFailed() {
			p.held = nil // the rewind fetches it again
			continue
		}
		if pv.Decide(rec, p.target, false).Wait {
			if time.Since(p.heldSince) < r.opts.ProofWait {
				waiting = true
				continue
			}
			p.unprovenTo = max(p.unprovenTo, rec.Offset+1)
			pv.Expire(rec)
			val, _ := headerValue(rec.Headers)
			r.opts.Logger.Warn("provenance mark of a source record neither proven nor disproven in time (the flow it names stored no progress that far); written as a record of the source: a duplicate if it was a copy; later marks of that flow on the partition are not waited for until its progress moves",
				"topic", p.id.Topic, "partition", p.id.Partition, "offset", rec.Offset,
				"mark", string(val), "waited", r.opts.ProofWait.String())
		}
		p.held = nil
		r.feed(ctx, p, recs)
		switch {
		case p.held != nil:
			waiting = true // held again, further on
		case p.isFailed() || p.halted.Load() || p.probing:
			// The rewind (or the probe's answer) fetches from there.
		default:
			p.paused = false
			r.src.seek(p.id.Topic, p.id.Partition, p.fedNext)
		}
	}
	return waiting
}

// dropped counts a record not written for its provenance and moves the
// partition's position past it exactly like past a transaction marker:
// the offset map covers it, and an offset at it translates to the next
// record written.
func (r *Replicator) dropped(p *partition, rec *kgo.Record, reason string) {
	if rec.Offset >= p.dropNext {
		p.dropNext = rec.Offset + 1
		if reason == metrics.DropLoop {
			p.loopDrops.Inc()
		} else {
			p.routedDrops.Inc()
		}
	}
	r.skipControl(p, rec.Offset, rec.LeaderEpoch)
}

// Provenance returns the flow's provenance decisions, or nil if it keeps
// no provenance (or r is nil).
func (r *Replicator) Provenance() *Provenance {
	if r == nil {
		return nil
	}
	return r.opts.Provenance
}

// checkDeleted reports the records the source deleted (retention,
// DeleteRecords) before they were copied: the partition's log start
// offset is past the next offset to copy. The consumer, fetching below
// the log start, resumes at it (ConsumeResetOffset); the records in
// between are gone. They are counted, logged with their exact range, and
// the position moves past them.
func (r *Replicator) checkDeleted(p *partition, fp kgo.FetchTopicPartition) {
	to := fp.LogStartOffset
	if len(fp.Records) > 0 {
		to = min(to, fp.Records[0].Offset)
	}
	if to <= p.fedNext {
		return
	}
	from := p.fedNext
	p.lost.Add(float64(to - from))
	r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, metrics.ErrRecordsLost).Inc()
	r.opts.Logger.Error("source deleted records before they were copied (retention or DeleteRecords); they are lost",
		"topic", p.id.Topic, "partition", p.id.Partition, "from", from, "to", to, "records", to-from)
	p.fedNext = to
	r.skipControl(p, to-1, -1) // the position moves past the gap like past a marker
}

// sourceLostData handles the consumer's report that a source partition
// lost records (a truncation it located or not). Where the consumer was
// reset below the position, the records from there arrive next and
// sourceTruncated copies them; it reports whether that is the case.
// Otherwise (reset to the same offset: records below it may have been
// replaced) it logs and counts here.
func (r *Replicator) sourceLostData(loss *kgo.ErrDataLoss) bool {
	p := r.lookup(loss.Topic, loss.Partition)
	if p == nil {
		return false
	}
	if loss.ResetTo < loss.ConsumedTo {
		return true
	}
	r.opts.Metrics.SourceTruncations.WithLabelValues(r.opts.Flow, p.id.Topic).Inc()
	r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, metrics.ErrSourceTrunc).Inc()
	r.opts.Logger.Error("source partition lost records (unclean leader election?); records below the position may have been replaced and are not copied again",
		"topic", p.id.Topic, "partition", p.id.Partition, "consumed_to", loss.ConsumedTo, "reset_to", loss.ResetTo)
	return true
}

// sourceTruncated handles a source record below the partition's position:
// the consumer only moves back by itself when the source partition was
// truncated (unclean leader election) and it resumed where the log
// diverged. The records from there are new data: the partition is rewound
// to them, once its writes in flight are answered, with its position and
// offset map cut back, and they are copied. One log line and a count say
// so.
func (r *Replicator) sourceTruncated(p *partition, offset int64) {
	p.dropNext = min(p.dropNext, offset) // new data: counted again
	p.mu.Lock()
	prev := p.fedNext
	p.halted.Store(true)
	if !p.failed || offset < p.failedAt {
		p.failedAt = offset
	}
	p.failed = true
	p.truncated = true
	p.retryAt = time.Now()
	p.mu.Unlock()
	r.opts.Metrics.SourceTruncations.WithLabelValues(r.opts.Flow, p.id.Topic).Inc()
	r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, metrics.ErrSourceTrunc).Inc()
	r.opts.Logger.Error("source partition truncated below the copied position (unclean leader election?); copying its records from the truncation point as new data",
		"topic", p.id.Topic, "partition", p.id.Partition, "from", offset, "position", prev)
}

// skipControl moves the partition's position past a transaction marker,
// which is not copied: at once if no write is in flight, else once the
// writes before it are acknowledged.
func (r *Replicator) skipControl(p *partition, offset int64, epoch int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failed {
		return // fetched again after the rewind
	}
	if p.inflight.Load() == 0 {
		if offset+1 > p.acked.SourceNext {
			p.acked.SourceNext, p.ackedEpoch = offset+1, epoch
		}
		return
	}
	if offset > p.pendingControl {
		p.pendingControl, p.pendingEpoch = offset, epoch
	}
}

func (p *partition) isFailed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

func fetchErrorKind(err error) string {
	switch {
	case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.SaslAuthenticationFailed),
		errors.Is(err, kerr.GroupAuthorizationFailed):
		return metrics.ErrAuthorization
	case errors.Is(err, kerr.OffsetOutOfRange):
		return metrics.ErrOffsetReset
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		return metrics.ErrTopicDeleted
	default:
		return metrics.ErrFetch
	}
}
