package dr

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/flow"
	"github.com/kmirror/kmirror/internal/groupsync"
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/progress"
)

// FailbackOptions tune a failback.
type FailbackOptions struct {
	// Timeout bounds the wait for the copy back to catch up.
	Timeout time.Duration
	// Progress, if set, is called while waiting.
	Progress func(lag int64)
}

// FailbackReport is the outcome of a failback.
type FailbackReport struct {
	Flow        string `json:"flow"`
	ReverseFlow string `json:"reverse_flow"`
	// CopiedBack is the number of records written on the target after the
	// failover that were copied to the old source.
	CopiedBack int64            `json:"copied_back"`
	Partitions []PartitionState `json:"partitions"`
	Groups     []GroupMove      `json:"groups"`
	At         time.Time        `json:"at"`
}

// Failback returns clients to the flow's source after a failover: it
// copies back to the source only the records written on the target since
// the failover, translates the consumer groups of the target back to the
// source, and sets the flow to resume after the copied-back records, so
// that nothing is copied twice either way. Producers and consumers must
// have stopped on the target, and `kmirror run` for the flow must not run.
func (e *Env) Failback(ctx context.Context, o FailbackOptions) (FailbackReport, error) {
	rep := FailbackReport{Flow: e.Flow.Name, ReverseFlow: e.Flow.Name + "-failback"}
	store := e.progressStore()
	loaded, err := store.Load(ctx)
	if err != nil {
		return rep, err
	}
	if loaded.Failover == nil {
		return rep, fmt.Errorf("flow %q: no failover recorded; failback copies back what was written on %q after `kmirror failover`", e.Flow.Name, e.Flow.Target)
	}
	if e.Flow.TopicNaming != policy.NamingIdentity {
		return rep, fmt.Errorf("flow %q: failback needs topic_naming: identity (prefix naming is not supported yet)", e.Flow.Name)
	}
	// Only the partitions of the topics failed back count (identity
	// naming: the target topics failed over are the source topics).
	back := slices.Collect(maps.Keys(loaded.Failover.TargetEnds))
	if err := e.notClean(ctx, loaded, progress.InTopics(back...)); err != nil {
		return rep, fmt.Errorf("flow %q: %w; stop every `kmirror run` of it first", e.Flow.Name, err)
	}
	src, err := e.source(ctx)
	if err != nil {
		return rep, fmt.Errorf("failback needs the old source: %w", err)
	}
	defer src.Close()

	reverse := e.reverseFlow(loaded.Failover)
	revStore := progress.NewStore(src, policy.ProgressTopic(reverse.Name))
	if err := e.seedReverse(ctx, revStore, src, loaded.Failover); err != nil {
		return rep, err
	}

	cfg := *e.Config
	cfg.Flows = []*config.Flow{reverse}
	run := start(ctx, &cfg, reverse, e.Logger)
	defer run.close()
	lags, err := run.waitCaughtUp(ctx, o.Timeout, o.Progress, nil, 0)
	if err != nil {
		return rep, fmt.Errorf("copying back to %q: %w", e.Flow.Source, err)
	}

	// Groups back, while the reverse flow's offset map is live.
	rep.Groups, err = e.groupsBack(ctx, src, run.flow, loaded)
	if err != nil {
		return rep, err
	}
	run.close()

	revLoaded, err := revStore.Load(ctx)
	if err != nil {
		return rep, err
	}
	for _, l := range lags {
		fe := loaded.Failover.TargetEnds[l.Topic][l.Partition]
		copied := max(l.SourceNext-fe, 0)
		rep.CopiedBack += copied
		rep.Partitions = append(rep.Partitions, PartitionState{Topic: l.Topic, Partition: l.Partition, TargetTopic: l.Topic,
			SourceEnd: l.SourceEnd, Replicated: l.SourceNext, NotReplicated: l.Lag})
	}
	if err := e.resumeForward(ctx, store, src, loaded, revLoaded); err != nil {
		return rep, err
	}
	rep.At = time.Now()
	return rep, groupErrors(rep.Groups)
}

// reverseFlow is the flow from the target back to the source over the
// topics the forward flow replicated.
func (e *Env) reverseFlow(f *progress.Failover) *config.Flow {
	rf := *e.Flow
	rf.Name = e.Flow.Name + "-failback"
	rf.Source, rf.Target = e.Flow.Target, e.Flow.Source
	rf.Topics, rf.TopicsRegexps = nil, nil
	for _, t := range slices.Sorted(maps.Keys(f.TargetEnds)) {
		rf.Topics = append(rf.Topics, regexp.QuoteMeta(t))
		rf.TopicsRegexps = append(rf.TopicsRegexps, regexp.MustCompile("^(?:"+regexp.QuoteMeta(t)+")$"))
	}
	rf.TopicsExclude, rf.TopicsExcludeRegexps = nil, nil
	rf.TopicPrefix = ""
	rf.SyncGroupOffsets = false
	rf.StartFrom = config.StartEarliest
	return &rf
}

// seedReverse stores the reverse flow's start: each target partition at
// its end offset at the failover, so only records written since are copied
// back. The reverse flow's progress topic also holds the failover it
// copies back for: state it holds for another failover (an earlier
// failover/failback cycle) is replaced, never resumed from; state for this
// one is an interrupted failback, which resumes.
func (e *Env) seedReverse(ctx context.Context, revStore *progress.Store, src *kgo.Client, f *progress.Failover) error {
	if err := revStore.Ensure(ctx, e.Flow.ReplicationFactor); err != nil {
		return err
	}
	rl, err := revStore.Load(ctx)
	if err != nil {
		return err
	}
	if rl.Failover != nil && rl.Failover.AtMs == f.AtMs {
		return nil // resuming an interrupted failback of this failover
	}
	if len(rl.Positions) > 0 {
		e.Logger.Info("replacing the copy-back state of an earlier failover", "reverse_flow", e.Flow.Name+"-failback",
			"failover_at", time.UnixMilli(f.AtMs).UTC().Format(time.RFC3339Nano))
	}
	names := slices.Sorted(maps.Keys(f.TargetEnds))
	srcEnds, err := kadm.NewClient(src).ListEndOffsets(ctx, names...)
	if err != nil {
		return fmt.Errorf("listing end offsets on %q: %w", e.Flow.Source, err)
	}
	var entries []progress.Entry
	for t, ps := range f.TargetEnds {
		for p, end := range ps {
			se, ok := srcEnds.Lookup(t, p)
			if !ok || se.Err != nil {
				return fmt.Errorf("topic %s partition %d is missing on %q", t, p, e.Flow.Source)
			}
			id := progress.Partition{Topic: t, Partition: p}
			entries = append(entries, progress.Entry{
				Partition: id,
				// Stopped: nothing of the reverse flow was written yet.
				Position: progress.Position{SourceNext: end, TargetNext: se.Offset, Stopped: true},
				// The offset map of an earlier cycle maps records copied
				// back then; this failback starts a map of its own.
				Dropped: rl.Runs[id],
			})
		}
	}
	if err := revStore.Write(ctx, entries); err != nil {
		return err
	}
	if err := revStore.MarkStarted(ctx); err != nil {
		return err
	}
	// Last: a failback interrupted before this point seeds again.
	return revStore.PutFailover(ctx, *f)
}

// groupsBack translates the committed offsets of the forward flow's groups
// on the target back to the source and commits them there: offsets in
// records written before the failover through the inverse of the forward
// offset map, offsets in records written since through the reverse flow's.
func (e *Env) groupsBack(ctx context.Context, src *kgo.Client, rev *flow.Flow, loaded progress.Loaded) ([]GroupMove, error) {
	tgtAdm, srcAdm := kadm.NewClient(e.target), kadm.NewClient(src)
	listed, err := tgtAdm.ListGroups(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing groups on %q: %w", e.Flow.Target, err)
	}
	matcher := groupsync.New(groupsync.Options{Include: e.Flow.GroupsRegexps, Exclude: e.Flow.GroupsExcludeRegexps})
	var moves []GroupMove
	for _, g := range listed.Groups() {
		if !matcher.Matches(g) {
			continue
		}
		committed, err := tgtAdm.FetchOffsets(ctx, g)
		if err != nil {
			moves = append(moves, GroupMove{Group: g, Error: err.Error()})
			continue
		}
		var cps []groupsync.Checkpoint
		committed.Each(func(o kadm.OffsetResponse) {
			id := progress.Partition{Topic: o.Topic, Partition: o.Partition}
			pos, ok := loaded.Positions[id]
			if o.Err != nil || o.At < 0 || !ok {
				return
			}
			var res offsets.Result
			if fe := loaded.Failover.TargetEnds[o.Topic][o.Partition]; o.At >= fe {
				res, ok = rev.Translate(o.Topic, o.Partition, o.At)
				if !ok {
					return
				}
			} else {
				res = offsets.NewMap(loaded.Runs[id]).Inverse().Translate(o.At, pos.SourceNext)
			}
			cps = append(cps, groupsync.Checkpoint{Group: g, Topic: o.Topic, Partition: o.Partition, TargetTopic: o.Topic,
				SourceOffset: o.At, TargetOffset: res.Target, Exact: res.Exact, Metadata: o.Metadata})
		})
		if len(cps) == 0 {
			continue
		}
		m := GroupMove{Group: g, Partitions: len(cps)}
		m.Committed, m.Active, err = groupsync.Commit(ctx, srcAdm, g, cps)
		if err != nil {
			m.Error = err.Error()
		}
		moves = append(moves, m)
	}
	return moves, nil
}

// resumeForward sets the forward flow to resume at the source's current
// end: the records copied back are already on the target. The reverse
// flow's offset map, inverted, lets the forward flow translate offsets in
// them.
func (e *Env) resumeForward(ctx context.Context, store *progress.Store, src *kgo.Client, loaded, rev progress.Loaded) error {
	names := slices.Sorted(maps.Keys(loaded.Failover.TargetEnds))
	srcEnds, err := kadm.NewClient(src).ListEndOffsets(ctx, names...)
	if err != nil {
		return fmt.Errorf("listing end offsets on %q: %w", e.Flow.Source, err)
	}
	tgtEnds, err := kadm.NewClient(e.target).ListEndOffsets(ctx, names...)
	if err != nil {
		return fmt.Errorf("listing end offsets on %q: %w", e.Flow.Target, err)
	}
	var entries []progress.Entry
	var errs []error
	srcEnds.Each(func(o kadm.ListedOffset) {
		te, ok := tgtEnds.Lookup(o.Topic, o.Partition)
		if o.Err != nil || !ok || te.Err != nil {
			errs = append(errs, fmt.Errorf("no end offsets for %s/%d", o.Topic, o.Partition))
			return
		}
		id := progress.Partition{Topic: o.Topic, Partition: o.Partition}
		back := offsets.NewMap(rev.Runs[id]).Inverse().Runs()
		if old := loaded.Positions[id].Run; old != nil {
			// The newest run so far travelled in the position record,
			// which is replaced: keep it as a run of its own.
			back = append([]offsets.Run{*old}, back...)
		}
		entries = append(entries, progress.Entry{
			Partition: id,
			// Stopped: the flow does not run (checked), and the target
			// holds nothing of it past this position.
			Position: progress.Position{SourceNext: o.Offset, TargetNext: te.Offset, Stopped: true},
			Runs:     back,
		})
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := store.Write(ctx, entries); err != nil {
		return err
	}
	return store.ClearFailover(ctx)
}
