package replicate

import (
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/metrics"
)

// batchTooLarge stops a partition at a source record batch that
// decompresses to more than the source client's MaxDecompressBatchBytes
// (a decompression bomb, or a batch the flow's part of the memory budget
// cannot hold): the client stopped fetching the partition there
// (kgo.ErrDecompressTooLarge), and its records cannot be copied without
// that memory. As at a record the target refuses (writeFailed), the
// partition stays stopped before the batch's first record it has not
// copied, with one error line, one count in kmirror_errors_total, one in
// kmirror_partitions_stopped and an entry in Totals.Stopped; every other
// partition goes on. It fetches the batch again every
// RefusedRetryInterval (retention may have deleted it by then: the loss
// is reported, and the partition goes on after it); a retry that fails
// the same way is logged at debug level only. No record is skipped.
func (r *Replicator) batchTooLarge(e *kgo.ErrDecompressTooLarge) {
	p := r.lookup(e.Topic, e.Partition)
	if p == nil {
		return
	}
	limit, _ := r.opts.Source.OptValue(kgo.MaxDecompressBatchBytes).(int)
	at := max(p.fedNext, e.Offset)
	reason := fmt.Sprintf("the source record batch at offsets %d to %d decompresses to more than %s, the flow's limit for one batch (set from its part of memory_limit)",
		e.Offset, e.NextOffset-1, sizeText(int64(limit)))
	now := time.Now()
	p.mu.Lock()
	if p.failed {
		// A write failed meanwhile: the rewind fetches the batch again,
		// and it fails again then.
		p.mu.Unlock()
		return
	}
	again := p.refused != nil && p.refused.unread && p.refused.offset == at
	if !again {
		p.refused = &refusal{offset: at, since: now, unread: true, stopped: p.refused != nil && p.refused.stopped}
	}
	p.refused.reason = reason
	if !p.refused.stopped {
		p.refused.stopped = true
		r.stopped.Set(float64(r.nstopped.Add(1)))
	}
	p.failed, p.failedAt = true, at
	p.retryAt = now.Add(r.opts.RefusedRetryInterval)
	p.mu.Unlock()
	if again {
		r.opts.Logger.Debug("source record batch still decompresses past the flow's limit; partition stays stopped",
			"topic", e.Topic, "partition", e.Partition, "offset", at, "retry_in", r.opts.RefusedRetryInterval.String())
		return
	}
	r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, metrics.ErrDecompressTooLarge).Inc()
	r.opts.Logger.Error("source record batch decompresses to more than the flow's limit; partition stopped before it, nothing from it on is copied (raise memory_limit to copy it)",
		"topic", e.Topic, "partition", e.Partition, "offset", at, "batch_from", e.Offset, "batch_to", e.NextOffset-1,
		"limit_bytes", limit, "retry_in", r.opts.RefusedRetryInterval.String())
}

// readAgain ends the stop of partition p at a batch too large to
// decompress (batchTooLarge) once records of the partition are fetched
// again from where it stopped: the batch was deleted on the source.
func (r *Replicator) readAgain(p *partition) {
	p.mu.Lock()
	ref := p.refused
	if ref == nil || !ref.unread {
		p.mu.Unlock()
		return
	}
	p.refused = nil
	if ref.stopped {
		r.stopped.Set(float64(r.nstopped.Add(-1)))
	}
	p.mu.Unlock()
	r.opts.Logger.Info("source partition stopped at a batch too large to decompress is read again; partition goes on",
		"topic", p.id.Topic, "partition", p.id.Partition, "stopped_at", ref.offset)
}

// sizeText writes n bytes as "24 MiB".
func sizeText(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d bytes", n)
}

// withBufferNote adds to the refusal of record out as too large that it
// did not reach the target: it is larger than the producer's buffer
// (producer.max_buffered_bytes, or what the memory budget set), which
// franz-go refuses before sending.
func (r *Replicator) withBufferNote(err error, out *kgo.Record) error {
	limit, _ := r.opts.Target.OptValue(kgo.MaxBufferedBytes).(int64)
	size := int64(len(out.Key) + len(out.Value))
	for _, h := range out.Headers {
		size += int64(len(h.Key) + len(h.Value))
	}
	if limit <= 0 || size <= limit {
		return err
	}
	return fmt.Errorf("%w; the record (%d bytes) is larger than the flow's produce buffer (%s), so kmirror did not send it: set producer.max_buffered_bytes above it, or raise memory_limit",
		err, size, sizeText(limit))
}
