package flow

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/replicate"
	"github.com/kmirror/kmirror/internal/retry"
	"github.com/kmirror/kmirror/internal/topicsync"
)

// syncTopics runs topic sync every refresh interval and hands new
// partitions to the data plane.
func (r *run) syncTopics(ctx context.Context) {
	syncer := topicsync.New(r.srcAdmin, r.tgtAdmin, r.naming, r.cfg.ReplicationFactor, r.logger)
	// start_from applies only to partitions present at the flow's very
	// first start; everything discovered later starts at its beginning.
	firstStart := !r.loaded.Started
	markedStarted := r.loaded.Started
	if !r.loaded.CleanStop && len(r.loaded.Positions) > 0 {
		r.settleTarget(ctx)
	}
	errLog := retry.Throttle{Every: 30 * time.Second}
	t := time.NewTicker(r.cfg.TopicRefreshInterval)
	defer t.Stop()
	for {
		err := r.syncOnce(ctx, syncer, firstStart)
		if err == nil && !markedStarted {
			if err = r.store.MarkStarted(ctx); err == nil {
				markedStarted = true
			}
		}
		if err == nil {
			firstStart = false
		} else if ctx.Err() == nil {
			r.metrics.Errors.WithLabelValues(r.cfg.Name, metrics.ErrTopicSync).Inc()
			if errLog.Allow() {
				r.logger.Error("topic sync failed; retrying", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// settleTarget waits, after a run that did not stop cleanly, until the
// target partitions it wrote stop growing: writes the dead run had sent can
// still be appended for a moment, and the resume checks must see them.
func (r *run) settleTarget(ctx context.Context) {
	seen := map[string]bool{}
	var names []string
	for p := range r.loaded.Positions {
		if t := r.naming.TargetName(p.Topic); !seen[t] {
			seen[t] = true
			names = append(names, t)
		}
	}
	const quiet, limit = time.Second, 15 * time.Second
	var last kadm.ListedOffsets
	settled := retry.Until(ctx, quiet, limit, func() bool {
		ends, err := r.tgtAdmin.ListEndOffsets(ctx, names...)
		if err != nil {
			return true // the resume checks report what they cannot read
		}
		same := last != nil && sameEnds(last, ends)
		last = ends
		return same
	})
	if !settled && ctx.Err() == nil {
		r.logger.Warn("target partitions still growing after an unclean stop; resuming anyway", "waited", limit.String())
	}
}

func sameEnds(a, b kadm.ListedOffsets) bool {
	same := true
	a.Each(func(o kadm.ListedOffset) {
		if p, ok := b.Lookup(o.Topic, o.Partition); !ok || p.Offset != o.Offset {
			same = false
		}
	})
	return same
}

// syncOnce runs one topic sync pass and starts replicating the partitions
// it found ready that the data plane does not have yet.
func (r *run) syncOnce(ctx context.Context, syncer *topicsync.Syncer, firstStart bool) error {
	res, err := syncer.Sync(ctx)
	if err != nil {
		return err
	}
	r.metrics.Errors.WithLabelValues(r.cfg.Name, metrics.ErrTopicSync).Add(float64(len(res.Errors)))
	r.metrics.TopicsCreated.WithLabelValues(r.cfg.Name).Add(float64(len(res.Created)))
	if len(res.Removed) > 0 {
		r.metrics.Errors.WithLabelValues(r.cfg.Name, metrics.ErrTopicDeleted).Add(float64(len(res.Removed)))
		r.logger.Warn("source topics deleted; stopped replicating them", "topics", res.Removed)
		r.repl.Remove(res.Removed)
	}
	ready := res.Ready
	r.topics.Store(&ready)
	if len(ready) == 0 {
		return nil
	}

	names := make([]string, len(ready))
	for i, t := range ready {
		names[i] = t.Source
	}
	ends, err := r.srcAdmin.ListEndOffsets(ctx, names...)
	if err != nil {
		return fmt.Errorf("listing source end offsets: %w", err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			r.repl.SetHighWatermark(o.Topic, o.Partition, o.Offset)
		}
	})

	var newTopics []topicsync.Topic
	for _, t := range ready {
		for p := int32(0); p < t.Partitions; p++ {
			if !r.repl.Has(t.Source, p) {
				newTopics = append(newTopics, t)
				break
			}
		}
	}
	if len(newTopics) == 0 {
		return nil
	}
	as, err := r.assignments(ctx, newTopics, ends, firstStart)
	if err != nil {
		return err
	}
	r.repl.Add(as)
	return nil
}

// resumeConcurrency bounds the partitions whose resume points are checked
// at once.
const resumeConcurrency = 16

// assignments computes where each new partition starts: its stored
// position, or else the flow's start_from (first start only) or the
// partition's earliest offset.
func (r *run) assignments(ctx context.Context, topics []topicsync.Topic, ends kadm.ListedOffsets, firstStart bool) ([]replicate.Assignment, error) {
	names := make([]string, len(topics))
	targetNames := make([]string, len(topics))
	for i, t := range topics {
		names[i], targetNames[i] = t.Source, t.Target
	}
	starts, err := r.srcAdmin.ListStartOffsets(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("listing source start offsets: %w", err)
	}
	tgtEnds, err := r.tgtAdmin.ListEndOffsets(ctx, targetNames...)
	if err != nil {
		return nil, fmt.Errorf("listing target end offsets: %w", err)
	}
	var as []replicate.Assignment
	type resumed struct {
		i     int
		point resumePoint
	}
	var toResume []resumed
	for _, t := range topics {
		for p := int32(0); p < t.Partitions; p++ {
			if r.repl.Has(t.Source, p) {
				continue
			}
			id := progress.Partition{Topic: t.Source, Partition: p}
			start, ok := starts.Lookup(t.Source, p)
			end, ok2 := ends.Lookup(t.Source, p)
			if !ok || !ok2 || start.Err != nil || end.Err != nil {
				return nil, fmt.Errorf("no offsets for source partition %s: %w", id, errors.Join(start.Err, end.Err))
			}
			a := replicate.Assignment{Source: id, TargetTopic: t.Target, Runs: r.loaded.Runs[id]}
			if pos, ok := r.loaded.Positions[id]; ok {
				toResume = append(toResume, resumed{len(as), resumePoint{
					id: id, target: t.Target, pos: pos, sourceStart: start.Offset, sourceEnd: end.Offset,
				}})
			} else if firstStart && r.cfg.StartFrom == "latest" {
				a.Start = progress.Position{SourceNext: end.Offset, TargetNext: -1}
			} else {
				a.Start = progress.Position{SourceNext: start.Offset, TargetNext: -1}
			}
			as = append(as, a)
		}
	}
	// Resume points are checked in parallel: each may read both clusters.
	var wg sync.WaitGroup
	sem := make(chan struct{}, resumeConcurrency)
	for _, rs := range toResume {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			a := &as[rs.i]
			omap := offsets.NewMap(a.Runs)
			a.Start = r.resume(ctx, rs.point, tgtEnds, omap)
			a.Runs = omap.Runs()
		}()
	}
	wg.Wait()
	return as, nil
}
