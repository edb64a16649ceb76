package flow

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kmirror/kmirror/internal/kafka"
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
	syncer := topicsync.New(r.src, r.tgt, r.naming, r.cfg.ReplicationFactor, r.logger).
		WithAccess(kafka.AccessOf(r.source), kafka.AccessOf(r.target)).
		WithConfigs(r.cfg.TopicConfigExcludeRegexps, r.cfg.TopicConfigOverrides).
		WithProvenance(r.cfg.UsesProvenance()).
		WithMutual(r.graph.Mutual(r.cfg.Source, r.cfg.Target))
	if r.cfg.DeleteTopics {
		syncer.WithDeleteTopics(r.storedTopics())
	}
	// start_from applies only to partitions present at the flow's very
	// first start; everything discovered later starts at its beginning.
	firstStart := !r.loaded.Started
	markedStarted := r.loaded.Started
	if r.universe == nil && !r.cfg.ExactlyOnce {
		// (An exactly-once flow's positions are committed with the
		// records they cover: nothing of a dead run is past them.)
		if unclean := r.loaded.Unclean(nil); len(unclean) > 0 {
			r.settleTarget(ctx, unclean)
		}
	}
	errLog := retry.Throttle{Every: 30 * time.Second}
	t := time.NewTicker(r.cfg.TopicRefreshInterval)
	defer t.Stop()
	// Between passes, the source's topic list is checked for new topics
	// (see topicsync.CheckInterval); a change starts a pass at once.
	var check *time.Timer
	var checkC <-chan time.Time
	schedule := func(partitions int) {
		every := topicsync.CheckInterval(r.cfg.TopicRefreshInterval, partitions)
		if every <= 0 {
			checkC = nil
			return
		}
		if check == nil {
			check = time.NewTimer(every)
		} else {
			check.Reset(every)
		}
		checkC = check.C
	}
	defer func() {
		if check != nil {
			check.Stop()
		}
	}()
	schedule(0)
	pass := syncer.Sync
	for {
		err := r.syncOnce(ctx, pass, firstStart)
		if err == nil && !markedStarted && r.allStored(ctx) {
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
		pass = nil
		for pass == nil {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				pass = syncer.Sync
			case <-r.repl.AgainReady():
				// A partition to compare with the target again.
				pass = syncer.Sync
			case <-checkC:
				if r.topicsChanged(ctx, syncer, schedule) {
					pass = syncer.SyncNew
				}
			}
		}
	}
}

// checkTimeout bounds one check of the source's topic list (and the
// refresh interval does too): the passes wait for it.
const checkTimeout = 10 * time.Second

// topicsChanged checks the source's topic list between passes and reports
// whether a topic the flow selects appeared, grew or was created again;
// it schedules the next check by the size of the listing. A failed check
// is left to the next pass to report.
func (r *run) topicsChanged(ctx context.Context, syncer *topicsync.Syncer, schedule func(partitions int)) bool {
	cctx, cancel := context.WithTimeout(ctx, min(checkTimeout, r.cfg.TopicRefreshInterval))
	defer cancel()
	changed, partitions, err := syncer.Changed(cctx)
	schedule(partitions)
	if err != nil {
		r.logger.Debug("checking the source topics between passes failed", "err", err)
		return false
	}
	if changed {
		r.logger.Debug("source topics changed; running a pass now")
	}
	return changed
}

// storedTopics returns the source topics the flow's stored progress names:
// topics it replicated before this run.
func (r *run) storedTopics() []string {
	seen := map[string]bool{}
	var out []string
	for p := range r.loaded.Positions {
		if !seen[p.Topic] {
			seen[p.Topic] = true
			out = append(out, p.Topic)
		}
	}
	return out
}

// settleTarget waits, after a run that did not stop cleanly, until the
// target topics of the partitions it did not stop cleanly (unclean) stop
// growing: writes the dead run had sent can still be appended for a
// moment, and the resume checks must see them.
func (r *run) settleTarget(ctx context.Context, unclean []progress.Partition) {
	seen := map[string]bool{}
	var names []string
	for _, p := range unclean {
		if t := r.naming.TargetName(p.Topic); !seen[t] {
			seen[t] = true
			names = append(names, t)
		}
	}
	const quiet, limit = time.Second, 15 * time.Second
	var last kadm.ListedOffsets
	settled := retry.Until(ctx, quiet, limit, func() bool {
		lctx, cancel := context.WithTimeout(ctx, offsetsTimeout)
		defer cancel()
		ends, err := r.tgtAdmin.ListEndOffsets(lctx, names...)
		if err == nil {
			err = ends.Error()
		}
		if err != nil {
			// Not settled: ends not listed may still grow.
			last = nil
			return false
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

// offsetsTimeout bounds one listing of partition offsets: a partition
// without a leader must not hold up the others.
const offsetsTimeout = 10 * time.Second

// Clusters named by kmirror_topic_recreated_total.
const (
	sideSource = "source"
	sideTarget = "target"
)

// syncOnce runs one topic sync pass (Sync, or SyncNew after a check saw a
// change) and starts replicating the partitions it found ready that the
// data plane does not have yet. A problem of one topic or partition leaves
// it out of this pass (it is retried on the next) and never stops the
// others; an error is returned only when a cluster cannot be listed at
// all or the pass was cut short.
func (r *run) syncOnce(ctx context.Context, pass func(context.Context) (topicsync.Result, error), firstStart bool) error {
	res, err := pass(ctx)
	if err != nil {
		return err
	}
	// Before the data plane first writes to a topic: the producer reads
	// the limit once per partition.
	for topic, n := range res.MaxMessageBytes {
		r.maxMessage.Store(topic, n)
	}
	stuck := newStuckSet()
	for topic, err := range res.Problems {
		stuck.add(topic, nil, err.Error())
	}
	defer func() { r.publishStuck(stuck) }()
	r.metrics.Errors.WithLabelValues(r.cfg.Name, metrics.ErrTopicSync).Add(float64(len(res.Errors)))
	r.metrics.TopicsCreated.WithLabelValues(r.cfg.Name).Add(float64(len(res.Created)))
	r.metrics.ConfigUpdates.WithLabelValues(r.cfg.Name).Add(float64(len(res.ConfigUpdated)))
	r.metrics.Errors.WithLabelValues(r.cfg.Name, metrics.ErrConfigSync).Add(float64(len(res.ConfigErrors)))
	r.metrics.TopicsDeleted.WithLabelValues(r.cfg.Name).Add(float64(len(res.Deleted)))
	r.metrics.Errors.WithLabelValues(r.cfg.Name, metrics.ErrTopicSync).Add(float64(len(res.DeleteErrors)))
	if len(res.Deleted) > 0 {
		// The data plane stopped writing them when their source topics
		// went; its producer need not keep their metadata.
		r.tgt.PurgeTopicsFromProducing(res.Deleted...)
	}
	if len(res.Removed) > 0 {
		r.metrics.Errors.WithLabelValues(r.cfg.Name, metrics.ErrTopicDeleted).Add(float64(len(res.Removed)))
		r.logger.Warn("source topics deleted; stopped replicating them", "topics", res.Removed)
		if r.universe == nil {
			r.remember(r.repl.Remove(res.Removed))
		}
	}
	ready := res.Ready
	r.topics.Store(&ready)
	if r.universe != nil {
		// Scale-out: the members replicate the partitions assigned to
		// them; the universe changing rebalances them.
		for _, t := range ready {
			for _, p := range t.Leaderless {
				stuck.add(t.Source, []int32{p}, "no leader on the source")
			}
		}
		r.universe(ready)
		return ctx.Err()
	}

	for _, t := range ready {
		for _, p := range t.Leaderless {
			stuck.add(t.Source, []int32{p}, "no leader on the source")
		}
	}
	pending := r.resetRecreated(ctx, ready, stuck)
	if len(pending) == 0 {
		return ctx.Err()
	}

	names := make([]string, len(pending))
	for i, t := range pending {
		names[i] = t.Source
	}
	ends := r.listOffsets(ctx, r.srcAdmin.ListEndOffsets, names)
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			r.repl.SetHighWatermark(o.Topic, o.Partition, o.Offset)
		}
	})

	// Partitions the data plane took out to be compared with the target
	// again (an earlier owner's write landed after it compared) are added
	// again below, from their positions as it left them.
	r.remember(r.repl.ResumeAgain())
	var newTopics []topicsync.Topic
	for _, t := range pending {
		for p := int32(0); p < t.Partitions; p++ {
			if !r.repl.Has(t.Source, p) {
				newTopics = append(newTopics, t)
				break
			}
		}
	}
	newTopics = r.producerReady(ctx, newTopics, stuck)
	if len(newTopics) == 0 {
		return ctx.Err()
	}
	r.repl.Add(r.assignments(ctx, newTopics, ends, firstStart, stuck))
	return ctx.Err()
}

// resetRecreated stops the topics the data plane replicates whose source
// or target now has another ID (deleted and created again) and resets what
// is stored of them, so that they are added again on a later pass, once no
// record of the old topic can still be in the data plane's hands. It
// returns the other topics of ready.
func (r *run) resetRecreated(ctx context.Context, ready []topicsync.Topic, stuck *stuckSet) []topicsync.Topic {
	var pending []topicsync.Topic
	for _, t := range ready {
		id, replicated := r.repl.TopicID(t.Source)
		if !replicated {
			pending = append(pending, t)
			continue
		}
		side, oldID := "", ""
		switch old := r.targetIDs[t.Target]; {
		case t.SourceID != "" && id != "" && id != t.SourceID:
			side, oldID = sideSource, id
		case t.TargetID != "" && old != "" && old != t.TargetID:
			side, oldID = sideTarget, old
		case old == "":
			r.targetIDs[t.Target] = t.TargetID
		}
		if side == "" {
			pending = append(pending, t)
			continue
		}
		r.remember(r.repl.Remove([]string{t.Source}))
		if side == sideTarget {
			r.tgt.PurgeTopicsFromClient(t.Target)
		}
		if err := r.resetTopic(ctx, t, side, oldID); err != nil {
			stuck.add(t.Source, nil, err.Error())
		}
	}
	return pending
}

// producerWait bounds how long a pass waits for the target producer to see
// the partitions a target topic grew by.
const producerWait = 10 * time.Second

// producerReady returns the topics whose every partition the target
// producer can write to, refreshing its metadata for up to producerWait.
// A producer that loaded a topic before it grew refuses records for the
// new partitions ("invalid record partitioning choice") until its metadata
// is refreshed, which it does not do by itself for that; the topics it
// still does not see are added to stuck and tried again on the next pass.
func (r *run) producerReady(ctx context.Context, topics []topicsync.Topic, stuck *stuckSet) []topicsync.Topic {
	sees := func(t topicsync.Topic) bool {
		if leader, _, _ := r.tgt.PartitionLeader(t.Target, 0); leader < 0 {
			return true // not loaded yet: the first write loads every partition
		}
		leader, _, _ := r.tgt.PartitionLeader(t.Target, t.Partitions-1)
		return leader >= 0
	}
	var ready, late []topicsync.Topic
	retry.Until(ctx, 100*time.Millisecond, producerWait, func() bool {
		ready, late = ready[:0], late[:0]
		for _, t := range topics {
			if sees(t) {
				ready = append(ready, t)
			} else {
				late = append(late, t)
			}
		}
		if len(late) > 0 {
			r.tgt.ForceMetadataRefresh()
		}
		return len(late) == 0
	})
	for _, t := range late {
		stuck.add(t.Source, nil, "the target producer does not see the new partitions of "+t.Target+" yet")
	}
	return ready
}

// listOffsets lists offsets of topics within offsetsTimeout. What could
// not be listed (a partition without a leader) is missing from the result
// and reported per partition by the caller.
func (r *run) listOffsets(ctx context.Context, list func(context.Context, ...string) (kadm.ListedOffsets, error), topics []string) kadm.ListedOffsets {
	ctx, cancel := context.WithTimeout(ctx, offsetsTimeout)
	defer cancel()
	out, err := list(ctx, topics...)
	if out == nil {
		out = kadm.ListedOffsets{}
	}
	if err != nil {
		r.logger.Debug("listing offsets answered partly", "err", err)
	}
	return out
}

// remember keeps the state of partitions the data plane stopped, so that a
// topic coming back is checked against it.
func (r *run) remember(removed map[progress.Partition]replicate.Removed) {
	for id, st := range removed {
		r.loaded.Positions[id] = st.Position
		r.loaded.Runs[id] = st.Runs
	}
}

// resetTopic forgets everything stored of topic t because the topic was
// deleted and created again on side (the source: a new topic with another
// ID; the target: the records written to it are gone). Every partition
// starts again at the source's earliest offset, without offset map: the
// stored positions are replaced and the stored runs deleted.
func (r *run) resetTopic(ctx context.Context, t topicsync.Topic, side, oldID string) error {
	starts := r.listOffsets(ctx, r.srcAdmin.ListStartOffsets, []string{t.Source})
	n := t.Partitions
	for id := range r.loaded.Positions {
		if id.Topic == t.Source {
			n = max(n, id.Partition+1)
		}
	}
	entries := make([]progress.Entry, 0, n)
	for p := range n {
		id := progress.Partition{Topic: t.Source, Partition: p}
		if !r.mine(id) {
			continue // another instance's: it resets it when it adds it
		}
		pos := progress.Position{TopicID: t.SourceID, TargetNext: -1}
		if o, ok := starts.Lookup(t.Source, p); ok && o.Err == nil {
			pos.SourceNext = o.Offset
		}
		entries = append(entries, progress.Entry{Partition: id, Position: pos, Dropped: r.loaded.Runs[id]})
	}
	if err := r.store.Write(ctx, entries); err != nil {
		return fmt.Errorf("topic %q was re-created on the %s; resetting its stored progress: %w", t.Source, side, err)
	}
	for _, e := range entries {
		r.loaded.Positions[e.Partition] = e.Position
		delete(r.loaded.Runs, e.Partition)
	}
	r.targetIDs[t.Target] = t.TargetID
	topic := t.Source
	if side == sideTarget {
		topic = t.Target
	}
	r.metrics.TopicsRecreated.WithLabelValues(r.cfg.Name, side, topic).Inc()
	if side == sideSource {
		r.logger.Warn("source topic was deleted and created again; copying the new topic from its beginning, nothing stored of the old one applies to it",
			"topic", t.Source, "target_topic", t.Target, "old_topic_id", oldID, "topic_id", t.SourceID, "partitions", t.Partitions)
	} else {
		r.logger.Warn("target topic was deleted; copying the source topic again from its beginning into the re-created target topic",
			"topic", t.Source, "target_topic", t.Target, "old_target_topic_id", oldID, "target_topic_id", t.TargetID, "partitions", t.Partitions)
	}
	return nil
}

// resumeConcurrency bounds the partitions whose resume points are checked
// at once.
const resumeConcurrency = 16

// assignments computes where each new partition starts: its stored
// position, or else the flow's start_from (first start only) or the
// partition's earliest offset. Stored state of another topic ID, or
// pointing past the target's end, is reset first. Partitions whose offsets
// cannot be listed are added to stuck and left for a later pass.
func (r *run) assignments(ctx context.Context, topics []topicsync.Topic, ends kadm.ListedOffsets, firstStart bool, stuck *stuckSet) []replicate.Assignment {
	names := make([]string, len(topics))
	targetNames := make([]string, len(topics))
	for i, t := range topics {
		names[i], targetNames[i] = t.Source, t.Target
	}
	starts := r.listOffsets(ctx, r.srcAdmin.ListStartOffsets, names)
	tgtEnds, producers := r.targetEnds(ctx, topics, targetNames)
	var as []replicate.Assignment
	type resumed struct {
		i     int
		point resumePoint
	}
	var toResume []resumed
	for _, t := range topics {
		if side, oldID := r.recreated(t); side != "" {
			if err := r.resetTopic(ctx, t, side, oldID); err != nil {
				stuck.add(t.Source, nil, err.Error())
				continue
			}
		}
		if r.targetIDs[t.Target] == "" {
			r.targetIDs[t.Target] = t.TargetID
		}
		for p := int32(0); p < t.Partitions; p++ {
			id := progress.Partition{Topic: t.Source, Partition: p}
			if r.repl.Has(t.Source, p) || !r.mine(id) {
				continue
			}
			start, ok := starts.Lookup(t.Source, p)
			end, ok2 := ends.Lookup(t.Source, p)
			if !ok || !ok2 || start.Err != nil || end.Err != nil {
				reason := "source offsets not listed"
				if err := errors.Join(start.Err, end.Err); err != nil {
					reason = "source offsets not listed: " + err.Error()
				}
				stuck.add(t.Source, []int32{p}, reason)
				continue
			}
			a := replicate.Assignment{Source: id, TargetTopic: t.Target, Runs: r.loaded.Runs[id]}
			if pos, ok := r.loaded.Positions[id]; ok {
				if te, ok := tgtEnds.Lookup(t.Target, p); ok && te.Err == nil && pos.TargetNext > te.Offset {
					// Same topic IDs, target end before the position: the
					// target lost records it had acknowledged.
					lost, err := r.targetLost(ctx, id, t.Target, pos, te.Offset, start.Offset)
					if err != nil {
						stuck.add(t.Source, []int32{p}, err.Error())
						continue
					}
					a.Start, a.Runs = lost, r.loaded.Runs[id]
					a.Start.TopicID = t.SourceID
					as = append(as, a)
					continue
				}
				// Its last owner stopped cleanly there: the position is
				// stored again, not Stopped, before anything is written.
				a.StoreFirst = pos.Stopped
				pos.TopicID = t.SourceID
				toResume = append(toResume, resumed{len(as), resumePoint{
					id: id, target: t.Target, pos: pos, sourceStart: start.Offset, sourceEnd: end.Offset,
				}})
			} else {
				a.Start = progress.Position{SourceNext: start.Offset, TargetNext: -1}
				if firstStart && r.cfg.StartFrom == "latest" {
					a.Start.SourceNext = end.Offset
				}
				// Where the first copy will land: stored before it is
				// written, so that a crash right after the first writes
				// compares them on restart instead of writing them again.
				if te, ok := tgtEnds.Lookup(t.Target, p); ok && te.Err == nil {
					a.Start.TargetNext = te.Offset
					a.StoreFirst = true
				}
			}
			a.Start.TopicID = t.SourceID
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
			a.Start.TopicID = rs.point.pos.TopicID
			a.Runs = omap.Runs()
		}()
	}
	wg.Wait()
	if !r.cfg.ExactlyOnce {
		r.noteWriters(ctx, as, producers)
	}
	return as
}

// recreated reports whether what is stored of topic t belongs to another
// topic of the same name, by topic IDs only: a source topic ID other than
// the stored one (the source topic was deleted and created again), or a
// target topic ID other than the one this run saw (the target topic was).
// It returns the side and the old ID, or "" when the stored state applies.
// A stored target position past the target's end under the same IDs is
// target data loss, handled per partition (targetLost).
func (r *run) recreated(t topicsync.Topic) (side, oldID string) {
	if old := r.targetIDs[t.Target]; old != "" && t.TargetID != "" && old != t.TargetID {
		return sideTarget, old
	}
	for p := range t.Partitions {
		id := progress.Partition{Topic: t.Source, Partition: p}
		if r.repl.Has(t.Source, p) || !r.mine(id) {
			continue
		}
		pos, ok := r.loaded.Positions[id]
		if !ok {
			continue
		}
		if pos.TopicID != "" && t.SourceID != "" && pos.TopicID != t.SourceID {
			return sideSource, pos.TopicID
		}
	}
	return "", ""
}

// targetLost handles a stored position past the end of its target
// partition under the same topic IDs: the target lost records it had
// acknowledged (an unclean leader election, or writes with acks: leader).
// Only the lost range of this partition is copied again: from the first
// source record whose copy was at or past the target's end (by the offset
// map; from the source's start when the map does not tell, or the target
// partition is empty). The new position and the cut offset map are
// stored before anything is written; the loss is counted.
func (r *run) targetLost(ctx context.Context, id progress.Partition, target string, pos progress.Position, end, sourceStart int64) (progress.Position, error) {
	runs := r.loaded.Runs[id]
	from := int64(-1)
	if end > 0 {
		from = firstCopiedFrom(runs, end)
	}
	if from < 0 || from > pos.SourceNext {
		from = sourceStart
	}
	from = max(from, sourceStart)
	m := offsets.NewMap(runs)
	m.Cut(-1, end)
	dropped := m.TakeDropped()
	changed, _ := m.TakeChanged()
	next := progress.Position{SourceNext: from, TargetNext: end, TopicID: pos.TopicID}
	if err := r.store.Write(ctx, []progress.Entry{{Partition: id, Position: next, Runs: changed, Dropped: dropped}}); err != nil {
		return pos, fmt.Errorf("target partition %s/%d lost records; storing the position to copy them again from: %w", target, id.Partition, err)
	}
	r.loaded.Positions[id] = next
	r.loaded.Runs[id] = m.Runs()
	r.metrics.TargetDataLoss.WithLabelValues(r.cfg.Name, id.Topic).Inc()
	r.metrics.Errors.WithLabelValues(r.cfg.Name, metrics.ErrTargetDataLoss).Inc()
	r.logger.Error("target partition ends before the stored position: it lost records it had acknowledged; copying the lost range of this partition again",
		"topic", id.Topic, "partition", id.Partition, "target_topic", target,
		"stored_target_offset", pos.TargetNext, "target_end", end, "from", from, "to", pos.SourceNext, "records", pos.SourceNext-from)
	return next, nil
}

// firstCopiedFrom returns the first source offset whose copy is at target
// offset tgt or later in runs, or -1 if the runs do not cover tgt (a run
// must start at or before it).
func firstCopiedFrom(runs []offsets.Run, tgt int64) int64 {
	first, covered := int64(-1), false
	for _, run := range runs {
		if run.Target <= tgt {
			covered = true
		}
		if run.Target+run.Len <= tgt {
			continue
		}
		s := run.Source + max(0, tgt-run.Target)
		if first < 0 || s < first {
			first = s
		}
	}
	if !covered {
		return -1
	}
	return first
}
