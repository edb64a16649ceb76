package replicate

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/progress"
)

// errOrderGate fails a record, unsent, because an earlier record of its
// partition failed.
var errOrderGate = errors.New("an earlier record of the partition was not written")

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// gateWait bounds how long an orderGate waits for the answers of the
// earlier records of its partition; past it, the record is failed and
// written again after the rewind, which is safe.
const gateWait = time.Second

// orderGate is the context of a record handed to the producer. franz-go
// checks the context of a partition's first buffered record before it
// sends it as the first batch of the partition with nothing in flight
// ahead of it, and fails that batch and every later one of the partition,
// unsent, if the context is done. At that moment the target answered every
// earlier record of the partition; the gate is open only if each answer
// was a success. A batch sent behind batches in flight is in their
// idempotent sequence: if one of them fails, the broker refuses it too.
// Together, no record reaches the target after an earlier record of its
// partition failed, and the rewind writes the failed record first.
type orderGate struct {
	context.Context // the run's
	p               *partition
	after           int64 // records of the partition handed to the producer before this one
	closed          atomic.Bool
}

func (g *orderGate) Done() <-chan struct{} {
	if g.closed.Load() {
		return closedChan
	}
	if !g.p.mayFollow(g.after) {
		g.closed.Store(true)
		return closedChan
	}
	return g.Context.Done()
}

func (g *orderGate) Err() error {
	if err := g.Context.Err(); err != nil {
		return err
	}
	if g.closed.Load() {
		return errOrderGate
	}
	return nil
}

// mayFollow reports whether a record handed to the producer after the
// first n of the partition may be sent: every one of those was answered,
// none failed. Answers are delivered shortly after the target gave them;
// it waits for them up to gateWait.
func (p *partition) mayFollow(n int64) bool {
	var deadline time.Time
	for {
		if p.halted.Load() {
			return false
		}
		if p.settled.Load() >= n {
			return !p.halted.Load()
		}
		now := time.Now()
		if deadline.IsZero() {
			deadline = now.Add(gateWait)
		} else if now.After(deadline) {
			return false
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// produce writes source record in, with headers, to the partition's
// target.
func (r *Replicator) produce(ctx context.Context, p *partition, in *kgo.Record, headers []kgo.RecordHeader) {
	gate := &orderGate{Context: ctx, p: p, after: p.produced.Add(1) - 1}
	out := &kgo.Record{
		Topic:     p.target,
		Partition: in.Partition,
		Key:       in.Key,
		Value:     in.Value,
		Headers:   headers,
		Timestamp: in.Timestamp,
		Context:   gate,
	}
	src, epoch, ts := in.Offset, in.LeaderEpoch, in.Timestamp
	size := int64(len(in.Key) + len(in.Value))
	for _, h := range headers {
		size += int64(len(h.Key) + len(h.Value))
	}
	p.inflight.Add(1)
	r.notePending(p, src, ts, size)
	answer := func(out *kgo.Record, err error) { r.acked(p, src, epoch, ts, size, out, err) }
	if r.txn == nil && p.unfenced.Load() {
		if f, ok := p.nextFence(); ok {
			r.handOff(size, func() { go r.fenceWrite(ctx, p, f, gate.after, out, answer) })
			return
		}
	}
	r.handOff(size, func() { r.opts.Target.Produce(ctx, out, answer) })
}

func (r *Replicator) acked(p *partition, src int64, epoch int32, ts time.Time, size int64, out *kgo.Record, err error) {
	if err != nil {
		r.writeFailed(p, src, out, err)
		return
	}
	r.ackedRun(p, src, 1, epoch, ts, size, out.Offset, progress.Producer{ID: out.ProducerID, Epoch: out.ProducerEpoch})
}

// ackedRun handles the target's acknowledgement of n records from source
// offset src, written at the n target offsets from tgt by producer (one
// record, or a record batch passed through whole).
func (r *Replicator) ackedRun(p *partition, src, n int64, epoch int32, ts time.Time, size, tgt int64, producer progress.Producer) {
	defer p.settled.Add(1)
	p.mu.Lock()
	if p.failed && src >= p.failedAt {
		// Written after an earlier record failed (the order gate prevents
		// it; a source truncation leaves it): the rewind writes it again.
		// Until then it is on the target past the position.
		p.doubt = true
		r.inDoubt(fmt.Errorf("source offset %d of %s written after an earlier record failed", src, p.id))
		p.inflight.Add(-1)
		p.mu.Unlock()
		p.duplicates.Inc()
		return
	}
	now := time.Now()
	if r.txn != nil && r.txn.firstAck.Load() == 0 {
		r.txn.firstAck.CompareAndSwap(0, now.UnixNano())
	}
	var lostFrom, lostSrc, lostSrcEnd int64 = -1, -1, -1
	var lossReported bool
	var resumed, wake bool
	if src >= p.acked.SourceNext {
		if p.acked.TargetNext >= 0 && tgt < p.acked.TargetNext {
			// The target partition's offsets went back: it lost records
			// it had acknowledged (unclean leader election, or deleted
			// and re-created). What kmirror wrote there since is no
			// longer in its offset map.
			lostFrom = p.acked.TargetNext
			lostSrc, lostSrcEnd = lostSources(p.omap.Runs(), tgt), p.acked.SourceNext
			p.omap.Cut(-1, tgt)
			p.acked.IdleEnd = 0
			lossReported = !p.targetLossAt.IsZero() && now.Sub(p.targetLossAt) < targetLossWindow
			p.targetLossAt, p.targetBackAt = time.Time{}, now
			if lossReported {
				p.targetBackAt = time.Time{}
			}
		}
		p.acked.SourceNext, p.ackedEpoch = src+n, epoch
		p.acked.TargetNext = tgt + n
		if r.txn == nil && producer.ID >= 0 {
			p.noteWriter(producer.ID, producer.Epoch)
		}
		p.omap.AddRun(src, tgt, n, now.UnixMilli())
		// Whatever a write in doubt left on the target is before this
		// one: the position is exact again.
		p.doubt = false
	}
	if p.probeAt == src {
		// A record refused with others was accepted alone: go on from the
		// next one, fetched again, alone too up to the last record that
		// was refused.
		p.probeAt = -1
		p.probe = src < p.probeEnd
		p.failed, p.failedAt, p.retryAt = true, src+1, now
		wake = true
		if p.refused != nil {
			if p.refused.stopped {
				r.stopped.Set(float64(r.nstopped.Add(-1)))
			}
			p.refused = nil
			resumed = true
		}
	}
	if p.inflight.Add(-1) == 0 && !p.failed && p.pendingControl >= p.acked.SourceNext {
		// Every record before the transaction marker is on the target.
		p.acked.SourceNext, p.ackedEpoch = p.pendingControl+1, p.pendingEpoch
	}
	streak := p.failures
	p.failures = 0
	p.mu.Unlock()
	if wake {
		r.wake()
	}
	if streak > 0 {
		r.opts.Logger.Info("writes to target succeed again", "topic", p.id.Topic, "partition", p.id.Partition,
			"target_topic", p.target, "failed_attempts", streak)
	}
	if resumed {
		r.opts.Logger.Info("target accepted the refused record; partition goes on",
			"topic", p.id.Topic, "partition", p.id.Partition, "offset", src)
	}
	if lostFrom >= 0 {
		log := r.opts.Logger.Warn // the producer's report was the count and the error
		if !lossReported {
			log = r.opts.Logger.Error
			r.opts.Metrics.TargetDataLoss.WithLabelValues(r.opts.Flow, p.id.Topic).Inc()
			r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, metrics.ErrTargetDataLoss).Inc()
		}
		log("target partition lost records it had acknowledged: its offsets went back; the copies of source offsets from..to are gone from the target and are not copied again",
			"topic", p.id.Topic, "partition", p.id.Partition, "target_topic", p.target,
			"from", lostSrc, "to", lostSrcEnd, "expected_target_offset", lostFrom, "got", tgt, "source_offset", src)
	}
	p.records.Add(float64(n))
	p.bytes.Add(float64(size))
	r.records.Add(n)
	r.bytes.Add(size)
	r.latency.Observe(now.Sub(ts).Seconds())
}

// targetLossWindow is how long after the producer reported that a target
// partition lost records (TargetDataLoss) its offsets going back counts as
// the same loss.
const targetLossWindow = 2 * time.Minute

// TargetDataLoss handles the target producer's report that a target
// partition lost records it had acknowledged (its idempotent sequence
// check failed with the log start below the last acknowledged offset:
// unclean leader election on the target). It is the target client's
// kgo.ProducerOnDataLossDetected hook. The loss is counted and logged
// once here; the records written next land at offsets lower than
// expected, which acked reports with the source range of the lost copies
// without counting the loss again (whichever of the two comes first
// counts, within targetLossWindow).
func (r *Replicator) TargetDataLoss(topic string, part int32) {
	var hit []*partition
	r.each(func(p *partition) {
		if p.target == topic && p.id.Partition == part {
			hit = append(hit, p)
		}
	})
	now := time.Now()
	for _, p := range hit {
		p.mu.Lock()
		// The hook runs on a goroutine of its own: the records written
		// after the loss may have been acknowledged, and the loss
		// counted, already.
		counted := !p.targetBackAt.IsZero() && now.Sub(p.targetBackAt) < targetLossWindow
		p.targetLossAt, p.targetBackAt = now, time.Time{}
		if counted {
			p.targetLossAt = time.Time{}
		}
		expected := p.acked.TargetNext
		p.mu.Unlock()
		if counted {
			continue
		}
		r.opts.Metrics.TargetDataLoss.WithLabelValues(r.opts.Flow, p.id.Topic).Inc()
		r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, metrics.ErrTargetDataLoss).Inc()
		r.opts.Logger.Error("target partition lost records it had acknowledged (the producer's sequence check failed: unclean leader election on the target?)",
			"topic", p.id.Topic, "partition", p.id.Partition, "target_topic", p.target,
			"expected_target_offset", expected)
	}
}

// lostSources returns the first source offset whose copy is at target
// offset tgt or later in runs, or -1 if none is.
func lostSources(runs []offsets.Run, tgt int64) int64 {
	first := int64(-1)
	for _, run := range runs {
		if run.Target+run.Len <= tgt {
			continue
		}
		s := run.Source + max(0, tgt-run.Target)
		if first < 0 || s < first {
			first = s
		}
	}
	return first
}

func produceErrorKind(err error) string {
	switch {
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
		return metrics.ErrRecordTooLarge
	case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed),
		errors.Is(err, kerr.TransactionalIDAuthorizationFailed), errors.Is(err, kerr.SaslAuthenticationFailed):
		return metrics.ErrAuthorization
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		return metrics.ErrUnknownTopic
	case errors.Is(err, kerr.InvalidRecord), errors.Is(err, kerr.CorruptMessage), errors.Is(err, kerr.InvalidTimestamp):
		return metrics.ErrInvalidRecord
	default:
		return metrics.ErrProduce
	}
}
