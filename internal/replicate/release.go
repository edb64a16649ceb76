package replicate

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/kmirror/kmirror/internal/progress"
)

// ErrNotDrained is returned by Release when a write of the released
// partitions was still unanswered as its ctx ended: it may still reach the
// target. The caller must stop every write of its own (end its lease) and
// call Abandon before anyone else may write the partitions.
var ErrNotDrained = errors.New("writes of the released partitions still unanswered")

// Release stops replicating the given partitions so that another
// instance can take them over: nothing more of them is handed to the
// producer, the writes in flight are waited for (until ctx ends), and
// their acknowledged positions and offset maps are stored, marked
// Stopped. The partitions leave the progress writes before any other
// progress write may start, so no later write stores them without the
// mark.
//
// It returns an error wrapping ErrNotDrained if a write was still
// unanswered as ctx ended (nothing is stored then, and the partitions
// are kept for Abandon), or the store's error if the positions could not
// be stored (every write was answered then: the next owner compares what
// the target holds past the stored position). The partitions are stopped
// either way.
func (r *Replicator) Release(ctx context.Context, ids []progress.Partition) error {
	var parts []*partition
	rm := map[string][]int32{}
	r.mu.RLock()
	for _, id := range ids {
		if p := r.parts[id.Topic][id.Partition]; p != nil {
			p.halted.Store(true)
			parts = append(parts, p)
			rm[id.Topic] = append(rm[id.Topic], id.Partition)
		}
	}
	r.mu.RUnlock()
	if len(parts) == 0 {
		return nil
	}
	r.src.remove(rm, false)
	// Writes in flight: every record handed to the producer is answered
	// (sent ones by the target; the others fail unsent at the order gate).
	drained := waitAnswered(ctx, parts)
	released := func(p *partition) bool {
		for _, q := range parts {
			if q == p {
				return true
			}
		}
		return false
	}
	var err error
	committing := false // a commit in progress did not end in time
	if drained && r.txn != nil {
		// A commit in progress (waiting for writes of other partitions
		// the target does not answer) is waited for only as long as
		// the release may take.
		if r.txn.lock(ctx) {
			defer r.txn.mu.Unlock()
		} else {
			drained, committing = false, true
		}
	}
	if drained {
		// A progress write in progress finishes first; none starts
		// until the partitions are gone. (Without the clean stop, a
		// progress write may still store them: not Stopped, like their
		// stored position already is.)
		r.progressMu.Lock()
		defer r.progressMu.Unlock()
	}
	switch {
	case drained && r.txn != nil:
		// The open transaction holds their last records: it commits
		// with their positions Stopped before anyone else may write
		// them. If it cannot, it is aborted, and the partitions'
		// committed positions are what the next owner resumes from; the
		// run ends (ErrTransactionAborted).
		if cerr := r.commitLocked(ctx, released); cerr != nil {
			err = fmt.Errorf("%w: %d partitions: %w", ErrNotDrained, len(parts), cerr)
		}
	case drained:
		// Every write of theirs was answered: the positions are exact
		// and stored Stopped, so the next owner need not wait for stray
		// writes, and a failover sees them stopped cleanly.
		err = r.writeProgressLocked(ctx, released, released)
	case committing:
		err = fmt.Errorf("%w: %d partitions: the commit in progress did not end: %w", ErrNotDrained, len(parts), ctx.Err())
	default:
		err = fmt.Errorf("%w: %d partitions: %w", ErrNotDrained, len(parts), ctx.Err())
	}
	if releaseStoredHook != nil {
		releaseStoredHook()
	}
	// Still under progressMu: a progress write waiting for it must not
	// find them any more.
	r.mu.Lock()
	for _, p := range parts {
		r.forgetLocked(p)
		if !drained {
			if r.undrained == nil {
				r.undrained = map[progress.Partition]*partition{}
			}
			r.undrained[p.id] = p
		}
	}
	r.mu.Unlock()
	r.updateGauges()
	return err
}

// releaseStoredHook, if set (by tests), runs in Release between the store
// of the final positions and the partitions' removal.
var releaseStoredHook func()

// Abandon finishes the release of partitions whose Release returned
// ErrNotDrained, once the caller ended its lease (nothing of this process
// reaches the target any more): it fails the records of theirs the
// producer still buffers and waits until the target answered every write
// of theirs that was sent, or ctx ends. Only then may another instance
// write them: a write sent before the lease ended can still land until it
// is answered. It returns nil once every write of theirs was answered or
// failed, and forgets them.
func (r *Replicator) Abandon(ctx context.Context, ids []progress.Partition) error {
	var parts []*partition
	r.mu.RLock()
	for _, id := range ids {
		if p := r.undrained[id]; p != nil {
			parts = append(parts, p)
		}
	}
	r.mu.RUnlock()
	if len(parts) == 0 {
		return nil
	}
	// The producer fails buffered records once it knows the answer to
	// every request it sent (a record it fails before that could still be
	// written by the request in flight). Under an ended lease, that covers
	// the records of every partition: the run stops anyway.
	abortDone := make(chan struct{})
	go func() {
		defer close(abortDone)
		_ = r.opts.Target.AbortBufferedRecords(ctx)
	}()
	drained := waitAnswered(ctx, parts)
	<-abortDone
	if !drained {
		return fmt.Errorf("%d released partitions still have writes unanswered: %w", len(parts), ctx.Err())
	}
	r.mu.Lock()
	for _, p := range parts {
		delete(r.undrained, p.id)
	}
	r.mu.Unlock()
	return nil
}

// waitAnswered waits until every record of parts handed to the producer
// was answered, and reports whether they were before ctx ended.
func waitAnswered(ctx context.Context, parts []*partition) bool {
	for _, p := range parts {
		for p.inflight.Load() > 0 {
			if ctx.Err() != nil {
				return false
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return true
}

// forgetLocked takes p out of the replicated partitions, its lag gauge
// and the stopped count (r.mu held).
func (r *Replicator) forgetLocked(p *partition) {
	delete(r.parts[p.id.Topic], p.id.Partition)
	if len(r.parts[p.id.Topic]) == 0 {
		delete(r.parts, p.id.Topic)
	}
	r.opts.Metrics.PartitionLag.DeleteLabelValues(r.opts.Flow, p.id.Topic, strconv.Itoa(int(p.id.Partition)))
	p.mu.Lock()
	if p.refused != nil && p.refused.stopped {
		p.refused.stopped = false
		r.stopped.Set(float64(r.nstopped.Add(-1)))
	}
	p.mu.Unlock()
}
