package replicate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/retry"
	"github.com/kmirror/kmirror/internal/topicsync"
)

// permanent reports whether an error refuses the record itself (too
// large, invalid), so that writing it again as it is cannot succeed until
// the target changes.
func permanent(kind string) bool {
	return kind == metrics.ErrRecordTooLarge || kind == metrics.ErrInvalidRecord
}

func (r *Replicator) writeFailed(p *partition, src int64, out *kgo.Record, err error) {
	// (After an aborted transaction the run ends: its writes fail.)
	shutdown := errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed) || r.txnFailed()
	gated := errors.Is(err, errOrderGate)
	kind := produceErrorKind(err)
	err = r.opts.TargetAccess.Denied(kafka.OpWrite, kafka.ResTopic, p.target, err)
	now := time.Now()
	p.mu.Lock()
	p.halted.Store(true) // before settled moves: see orderGate
	if !shutdown && !gated && !permanent(kind) {
		// Not failed unsent, not refused by the target: it may be there.
		p.doubt = true
		r.inDoubt(err)
	}
	first := !p.failed
	var refusedNow, again bool
	if first {
		p.failed = true
		p.failedAt = src
		if !shutdown {
			p.failures++
		}
		p.retryAt = now.Add(writeBackoff(p.failures))
		if permanent(kind) && !gated {
			if p.probeAt == src {
				// Refused alone: the record itself is the cause.
				again = p.refused != nil && p.refused.offset == src
				if !again {
					p.refused = &refusal{offset: src, since: now}
				}
				if kind == metrics.ErrRecordTooLarge {
					err = r.withBufferNote(withHeaderNote(err, out), out)
				}
				p.refused.rec, p.refused.reason = out, err.Error()
				refusedNow = true
				if r.opts.DeadLetterTopic != "" {
					p.retryAt = now
				} else {
					p.retryAt = now.Add(r.opts.RefusedRetryInterval)
					if !p.refused.stopped {
						p.refused.stopped = true
						r.stopped.Set(float64(r.nstopped.Add(1)))
					}
				}
			}
			p.probe = true
		}
	} else if src < p.failedAt {
		p.failedAt = src
	}
	if permanent(kind) && !gated {
		p.probeEnd = max(p.probeEnd, src)
	}
	if errors.Is(err, errLandedSince) {
		// Not rewound: the partition is taken out and compared with the
		// target again (resumeAgain).
		p.retryAt = now.Add(time.Hour)
	}
	if p.probeAt == src {
		p.probeAt = -1
	}
	failures, retryAt := p.failures, p.retryAt
	p.inflight.Add(-1)
	p.mu.Unlock()
	p.settled.Add(1)
	if shutdown {
		return
	}
	r.wake()
	p.retried.Inc()
	if !first || gated {
		return
	}
	r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, kind).Inc()
	switch {
	case refusedNow && again:
		r.opts.Logger.Warn("target still refuses the record; partition stays stopped",
			"topic", p.id.Topic, "partition", p.id.Partition, "offset", src, "target_topic", p.target,
			"retry_in", time.Until(retryAt).Round(time.Second).String(), "reason", err)
	case refusedNow && r.opts.DeadLetterTopic != "":
		r.opts.Logger.Error("target refuses the record; writing it to the dead-letter topic",
			"topic", p.id.Topic, "partition", p.id.Partition, "offset", src, "target_topic", p.target,
			"dead_letter_topic", r.opts.DeadLetterTopic, "reason", err)
	case refusedNow:
		r.opts.Logger.Error("target refuses the record; partition stopped before it, nothing after it is written",
			"topic", p.id.Topic, "partition", p.id.Partition, "offset", src, "target_topic", p.target,
			"retry_in", time.Until(retryAt).Round(time.Second).String(), "reason", err)
	case permanent(kind):
		r.opts.Logger.Warn("write to target refused; retrying the first refused record alone",
			"topic", p.id.Topic, "partition", p.id.Partition, "target_topic", p.target,
			"source_offset", src, "kind", kind, "err", err)
	default:
		// One line per failure streak: the attempts after the first are
		// counted (kmirror_errors_total, kmirror_retried_records_total)
		// and logged at debug level; the end of the streak is logged once
		// (writes to target succeed again).
		level := slog.LevelError
		if failures > 1 {
			level = slog.LevelDebug
		}
		msg := "write to target failed; partition paused and will retry from the failed record"
		if kafka.IsDenied(err) {
			msg = "write to target not authorized; partition paused and will retry from the failed record"
		}
		r.opts.Logger.Log(context.Background(), level, msg,
			"topic", p.id.Topic, "partition", p.id.Partition, "target_topic", p.target,
			"source_offset", src, "kind", kind, "attempt", failures,
			"retry_in", time.Until(retryAt).Round(time.Millisecond).String(), "err", err)
	}
}

// wake ends the poll in progress, so that recoverFailed runs.
func (r *Replicator) wake() {
	r.pollMu.Lock()
	if r.wakePoll != nil {
		r.wakePoll()
	}
	r.pollMu.Unlock()
}

// recoverFailed rewinds every failed partition whose writes in flight have
// drained and whose backoff has passed, and starts the dead-letter write
// of refused records. It reports whether any partition is still failed.
func (r *Replicator) recoverFailed(ctx context.Context) bool {
	var waiting bool
	now := time.Now()
	r.each(func(p *partition) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.failed {
			return
		}
		if p.inflight.Load() > 0 || now.Before(p.retryAt) {
			waiting = true
			return
		}
		if ref := p.refused; ref != nil && !ref.unread && ref.offset == p.failedAt && r.opts.DeadLetterTopic != "" {
			if !ref.writing {
				ref.writing = true
				r.deadLetters.Add(1)
				go r.deadLetter(ctx, p, ref)
			}
			waiting = true
			return
		}
		p.failed = false
		p.halted.Store(false)
		p.held = nil
		p.fedNext = p.failedAt
		p.pendingControl = -1
		p.probeOne, p.probing = p.probe, false
		if p.truncated {
			p.truncated = false
			p.acked.SourceNext, p.ackedEpoch = min(p.acked.SourceNext, p.failedAt), -1
			p.omap.Cut(p.failedAt, -1)
		}
		p.paused = false
		r.src.seek(p.id.Topic, p.id.Partition, p.failedAt)
		if p.failures > 0 {
			r.opts.Logger.Debug("retrying partition", "topic", p.id.Topic, "partition", p.id.Partition,
				"from_offset", p.failedAt, "record_alone", p.probe)
		}
	})
	return waiting
}

// deadLetter writes a refused record to the dead-letter topic, with
// headers naming its source and the reason. Once the target acknowledged
// it, the partition's position moves past the record and it goes on;
// otherwise the partition stays stopped and tries again after
// RefusedRetryInterval.
func (r *Replicator) deadLetter(ctx context.Context, p *partition, ref *refusal) {
	defer r.deadLetters.Done()
	rec := &kgo.Record{
		Topic:     r.opts.DeadLetterTopic,
		Partition: 0,
		Key:       ref.rec.Key,
		Value:     ref.rec.Value,
		Timestamp: ref.rec.Timestamp,
		Headers: append(append([]kgo.RecordHeader(nil), ref.rec.Headers...),
			kgo.RecordHeader{Key: HeaderSourceTopic, Value: []byte(p.id.Topic)},
			kgo.RecordHeader{Key: HeaderSourcePartition, Value: []byte(strconv.Itoa(int(p.id.Partition)))},
			kgo.RecordHeader{Key: HeaderSourceOffset, Value: []byte(strconv.FormatInt(ref.offset, 10))},
			kgo.RecordHeader{Key: HeaderError, Value: []byte(ref.reason)}),
	}
	err := r.ensureDeadLetterTopic(ctx)
	if t := r.txn; t != nil && err == nil {
		// The dead-letter record and the position past it go into one
		// transaction: a commit waits until both are in it, so a crash
		// can neither lose the record nor write it twice.
		t.mu.RLock()
		defer t.mu.RUnlock()
		t.records.Add(1)
		t.bytes.Add(int64(len(rec.Key) + len(rec.Value)))
	}
	if err == nil {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		done := make(chan error, 1)
		r.opts.Target.Produce(wctx, rec, func(_ *kgo.Record, err error) { done <- err })
		err = <-done
		cancel()
	}
	now := time.Now()
	p.mu.Lock()
	ref.writing = false
	if err != nil {
		p.retryAt = now.Add(r.opts.RefusedRetryInterval)
		first := !ref.stopped
		if first {
			ref.stopped = true
			r.stopped.Set(float64(r.nstopped.Add(1)))
		}
		p.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, metrics.ErrDeadLetter).Inc()
		log := r.opts.Logger.Warn
		if first {
			log = r.opts.Logger.Error
		}
		log("writing the refused record to the dead-letter topic failed; partition stopped before it",
			"topic", p.id.Topic, "partition", p.id.Partition, "offset", ref.offset,
			"dead_letter_topic", r.opts.DeadLetterTopic, "retry_in", r.opts.RefusedRetryInterval.String(), "err", err)
		return
	}
	if ref.stopped {
		r.stopped.Set(float64(r.nstopped.Add(-1)))
	}
	p.refused, p.probe = nil, false
	if ref.offset+1 > p.acked.SourceNext {
		p.acked.SourceNext, p.ackedEpoch = ref.offset+1, -1
	}
	p.failedAt, p.retryAt, p.failures = ref.offset+1, now, 0
	p.mu.Unlock()
	p.deadLettered.Inc()
	r.opts.Logger.Warn("refused record written to the dead-letter topic; partition goes on",
		"topic", p.id.Topic, "partition", p.id.Partition, "offset", ref.offset, "dead_letter_topic", r.opts.DeadLetterTopic)
	r.wake()
}

// ensureDeadLetterTopic creates the dead-letter topic (one partition, the
// target's default replication factor) unless it is known to exist.
func (r *Replicator) ensureDeadLetterTopic(ctx context.Context) error {
	if r.deadLetterOK.Load() {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := kadm.NewClient(r.opts.Target).CreateTopic(cctx, 1, -1, nil, r.opts.DeadLetterTopic)
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("creating dead-letter topic %q: %w", r.opts.DeadLetterTopic, err)
	}
	r.deadLetterOK.Store(true)
	return nil
}

// writeBackoff paces the retries of a partition whose write failed.
func writeBackoff(failures int) time.Duration {
	return retry.Backoff{Base: 500 * time.Millisecond, Max: 30 * time.Second}.Delay(failures)
}

// withHeaderNote adds to the target's refusal of record out as too large
// the size of the provenance header the copy carries and its source
// record does not, if it carries one.
func withHeaderNote(err error, out *kgo.Record) error {
	v, ok := headerValue(out.Headers)
	if !ok {
		return err
	}
	return fmt.Errorf("%w; the copy carries a %d-byte provenance header (%s) the source record has not: the target topic's max.message.bytes needs that much more than the source's (kmirror sets it for the topics it creates; raise it on the target or with topic_config_overrides)",
		err, topicsync.HeaderSize(HeaderProvenance, v), HeaderProvenance)
}
