package replicate

import (
	"context"
	"strconv"
	"time"

	"github.com/kmirror/kmirror/internal/progress"
)

// Release stops replicating the given partitions so that another
// instance can take them over: nothing more of them is handed to the
// producer, the writes in flight are waited for (until ctx ends), and
// their acknowledged positions and offset maps are stored. It returns an
// error if the writes did not all settle or the positions could not be
// stored; the partitions are stopped either way, and the next owner then
// compares what the target holds past the stored position.
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
	r.opts.Source.RemoveConsumePartitions(rm)
	// Writes in flight: every record handed to the producer is answered
	// (sent ones by the target; the others fail unsent at the order gate).
	var err error
	for _, p := range parts {
		for p.inflight.Load() > 0 {
			if ctx.Err() != nil {
				err = ctx.Err()
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if err == nil {
		// Every write of theirs was answered: the positions are exact
		// and stored Stopped, so the next owner need not wait for stray
		// writes, and a failover sees them stopped cleanly.
		err = r.writeProgressOf(ctx, func(p *partition) bool {
			for _, q := range parts {
				if q == p {
					return true
				}
			}
			return false
		}, true)
	}
	r.mu.Lock()
	for _, p := range parts {
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
	r.mu.Unlock()
	r.updateGauges()
	return err
}
