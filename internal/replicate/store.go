package replicate

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/retry"
)

func (r *Replicator) progressLoop(ctx context.Context) {
	t := time.NewTicker(r.opts.ProgressInterval)
	defer t.Stop()
	errLog := retry.Throttle{Every: 10 * time.Second}
	var idleListed time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.storeNow:
		}
		if r.opts.Provenance != nil && time.Since(idleListed) >= idleEndInterval {
			idleListed = time.Now()
			r.noteIdleEnds(ctx)
		}
		if err := r.writeProgress(ctx); err != nil && ctx.Err() == nil {
			r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, metrics.ErrProgress).Inc()
			if errLog.Allow() {
				r.opts.Logger.Error("storing progress failed; retrying", "err", err)
			}
		}
	}
}

// idleEndInterval is how often a flow with provenance lists the end
// offsets of the target partitions it has no write in flight to (see
// noteIdleEnds).
const idleEndInterval = time.Second

// noteIdleEnds lists the end offsets of the target partitions that have
// no write of the flow in flight, and keeps each as the partition's
// IdleEnd when no write was handed to the producer meanwhile: the flow
// wrote nothing between its position and that end, so a flow reading the
// target need not wait for this one's next write to know that the records
// there (of the target's own producers) are not its copies.
func (r *Replicator) noteIdleEnds(ctx context.Context) {
	type cand struct {
		p        *partition
		produced int64
	}
	var cands []cand
	topics := map[string]bool{}
	r.each(func(p *partition) {
		n := p.produced.Load()
		if p.settled.Load() != n || p.inflight.Load() != 0 {
			return
		}
		p.mu.Lock()
		ok := !p.failed && !p.doubt && p.acked.TargetNext >= 0
		p.mu.Unlock()
		if ok {
			cands = append(cands, cand{p, n})
			topics[p.target] = true
		}
	})
	if len(cands) == 0 {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(r.opts.Target).ListEndOffsets(lctx, slices.Collect(maps.Keys(topics))...)
	if err != nil {
		return // best effort: readers wait for the next write instead
	}
	for _, c := range cands {
		end, ok := ends.Lookup(c.p.target, c.p.id.Partition)
		if !ok || end.Err != nil || c.p.produced.Load() != c.produced {
			continue
		}
		c.p.mu.Lock()
		if !c.p.failed && !c.p.doubt && end.Offset > max(c.p.acked.TargetNext, c.p.acked.IdleEnd) {
			c.p.acked.IdleEnd = end.Offset
		}
		c.p.mu.Unlock()
	}
}

// Defaults for the offset map's bounds.
const (
	DefaultOffsetMapRetention = 7 * 24 * time.Hour
	DefaultOffsetMapMaxRuns   = 50_000
)

// writeProgress stores the positions and offset-map runs that changed
// since the last write, applies the offset map's retention and refreshes
// the lag gauges. Every run changed is a record of its own, written before
// the position: a position never carries a run, so one that moves without
// a new run (past transaction markers) leaves the stored runs as they are,
// and the newest run covers up to it.
func (r *Replicator) writeProgress(ctx context.Context) error {
	return r.writeProgressOf(ctx, nil, nil)
}

// writeProgressOf is writeProgress for the partitions keep selects (all
// if nil). Writes are serialised, so that an older position never lands
// after a newer one. stopping selects the partitions that stop here with
// every write answered (none if nil): their positions are stored Stopped,
// unless a write of theirs failed in doubt.
func (r *Replicator) writeProgressOf(ctx context.Context, keep, stopping func(*partition) bool) error {
	r.progressMu.Lock()
	defer r.progressMu.Unlock()
	return r.writeProgressLocked(ctx, keep, stopping)
}

// writeProgressLocked is writeProgressOf with progressMu held.
func (r *Replicator) writeProgressLocked(ctx context.Context, keep, stopping func(*partition) bool) error {
	retention, maxRuns := r.opts.OffsetMapRetention, r.opts.OffsetMapMaxRuns
	if retention <= 0 {
		retention = DefaultOffsetMapRetention
	}
	if maxRuns <= 0 {
		maxRuns = DefaultOffsetMapMaxRuns
	}
	minMs := time.Now().Add(-retention).UnixMilli()
	var entries []progress.Entry
	var parts []*partition
	var marks []int
	var drops [][]offsets.Run
	var stops []bool
	r.each(func(p *partition) {
		if keep != nil && !keep(p) {
			return
		}
		p.mu.Lock()
		pos, persisted, storedStopped, persistedIdle := p.acked, p.persisted, p.storedStopped, p.persistedIdle
		pos.Stopped = stopping != nil && stopping(p) && !p.doubt
		pos.LeaderEpoch = nil
		if p.ackedEpoch >= 0 {
			e := p.ackedEpoch
			pos.LeaderEpoch = &e
		}
		p.omap.Advance(pos.SourceNext)
		cut := p.omap.TakeDropped()
		dropped := append(cut, p.omap.Trim(-1, minMs, maxRuns)...)
		changed, mark := p.omap.TakeChanged()
		p.mu.Unlock()
		if hwm := p.hwm.Load(); hwm >= 0 {
			p.lag.Set(float64(max(hwm-pos.SourceNext, 0)))
		}
		if pos.SourceNext == persisted && len(changed) == 0 && len(dropped) == 0 && pos.Stopped == storedStopped && pos.IdleEnd == persistedIdle {
			return
		}
		pos.Run = nil
		entries = append(entries, progress.Entry{Partition: p.id, Position: pos, Runs: changed, Dropped: dropped})
		parts = append(parts, p)
		marks = append(marks, mark)
		drops = append(drops, dropped)
		stops = append(stops, pos.Stopped)
	})
	if len(entries) == 0 {
		return nil
	}
	if err := r.opts.Progress.Write(ctx, entries); err != nil {
		for i, p := range parts {
			p.mu.Lock()
			p.omap.Restore(marks[i])
			// The runs dropped (by a cut or by retention) are deleted
			// from the store by the next write.
			p.omap.RestoreDropped(drops[i])
			p.mu.Unlock()
		}
		return err
	}
	r.opts.Metrics.ProgressWrites.WithLabelValues(r.opts.Flow).Add(float64(len(entries)))
	r.progressEntries += int64(len(entries))
	if r.txn != nil {
		for i, p := range parts {
			r.txn.written = append(r.txn.written, stored{p, entries[i].Position})
		}
	}
	for i, p := range parts {
		p.mu.Lock()
		p.persisted = entries[i].SourceNext
		p.persistedIdle = entries[i].IdleEnd
		p.storedStopped = stops[i]
		p.mu.Unlock()
	}
	// Partitions that stop here are not read any more.
	var starting []*partition
	for _, p := range parts {
		if stopping == nil || !stopping(p) {
			starting = append(starting, p)
		}
	}
	r.startStored(starting)
	return nil
}

// startStored starts reading the partitions among parts that waited for
// their start position to be stored (Assignment.StoreFirst).
func (r *Replicator) startStored(parts []*partition) {
	add := map[string]map[int32]kgo.Offset{}
	r.mu.Lock()
	for _, p := range parts {
		if p.start == nil {
			continue
		}
		if add[p.id.Topic] == nil {
			add[p.id.Topic] = map[int32]kgo.Offset{}
		}
		add[p.id.Topic][p.id.Partition] = *p.start
		p.start = nil
	}
	r.mu.Unlock()
	if len(add) > 0 {
		r.src.add(add)
	}
}

// Translate returns the target offset of the first replicated record at or
// after source offset src of a replicated partition, and false if the
// partition is not replicated here (for an exactly-once replicator, of its
// committed copies only). An offset between the newest run and
// the position (past transaction markers) is exact; one in a hole of the
// map (runs an older version did not store) is rounded down.
func (r *Replicator) Translate(topic string, partition int32, src int64) (offsets.Result, bool) {
	p := r.lookup(topic, partition)
	if p == nil {
		return offsets.Result{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if r.txn != nil && src > p.committed.SourceNext {
		// Exactly-once: the copies past the committed position may still
		// be aborted and written again further on; a consumer group
		// moved past them would skip their new copies. Round down to
		// the committed position.
		return offsets.Result{Target: max(p.committed.TargetNext, 0), Exact: false}, true
	}
	next := p.acked.TargetNext
	if next < 0 {
		// Nothing written yet: the first record lands at the target's
		// end, which is unknown here; round down.
		return offsets.Result{Target: 0, Exact: false}, true
	}
	p.omap.Advance(p.acked.SourceNext)
	return p.omap.Translate(src, next), true
}
