package dr

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kmirror/kmirror/internal/flow"
	"github.com/kmirror/kmirror/internal/groupsync"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/progress"
)

// FailoverOptions tune a failover.
type FailoverOptions struct {
	// Timeout bounds the wait for the flow's lag to reach 0 (planned).
	Timeout time.Duration
	// SourceUnreachable fails over from the checkpoints and positions in
	// the target alone.
	SourceUnreachable bool
	// Force proceeds although the flow did not stop cleanly (planned).
	Force bool
	// Progress, if set, is called while waiting for the lag to reach 0.
	Progress func(lag int64)
}

// ErrLagTimeout is returned when a planned failover's flow did not catch up
// in time; the report says what is left.
var ErrLagTimeout = errors.New("the flow did not catch up in time; producers may still be writing to the source")

// Failover moves the flow's consumer groups to the target. Planned: it runs
// the flow until every source record is on the target (producers must have
// stopped writing to the source), syncs every group's offsets one last
// time, stops the flow cleanly and reports. With SourceUnreachable: it
// commits the last checkpoints to the target groups and reports the
// recovery point from the target alone.
func (e *Env) Failover(ctx context.Context, o FailoverOptions) (Report, error) {
	if o.SourceUnreachable {
		return e.unplanned(ctx)
	}
	return e.planned(ctx, o)
}

func (e *Env) planned(ctx context.Context, o FailoverOptions) (Report, error) {
	rep := Report{Flow: e.Flow.Name, Planned: true, NotReplicated: -1}
	store := e.progressStore()
	loaded, err := store.Load(ctx)
	if err != nil {
		return rep, err
	}
	src, err := e.source(ctx)
	if err != nil {
		return rep, fmt.Errorf("%w (use --source-unreachable if the source is gone)", err)
	}
	defer src.Close()
	srcAdm := kadm.NewClient(src)
	// Only the partitions of the topics failed over count: those of the
	// source topics the flow's filters match. A topic deleted or
	// excluded since keeps its last position, which must not block.
	failing, err := e.matched(ctx, srcAdm)
	if err != nil {
		return rep, err
	}
	if err := e.notClean(ctx, loaded, progress.InTopics(failing.Names()...)); err != nil {
		if !o.Force {
			return rep, fmt.Errorf("flow %q: %w; stop every `kmirror run` of it first (SIGTERM), or pass --force if one crashed", e.Flow.Name, err)
		}
		e.Logger.Warn("failing over although the flow did not stop cleanly (--force)", "flow", e.Flow.Name, "reason", err)
	}

	fl := flow.New(e.Config, e.Flow, metrics.New(), e.Logger)
	checkCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err = fl.Check(checkCtx)
	cancel()
	if err != nil {
		return rep, fmt.Errorf("%w (use --source-unreachable if the source is gone)", err)
	}
	// Every source topic the flow's filters match counts, replicated or
	// not: one whose target could not be created or grown is not on the
	// target, and the failover must say so rather than report 0 left.
	missing := func(ctx context.Context, lags []flow.PartitionLag) ([]flow.PartitionLag, error) {
		return e.unreplicated(ctx, srcAdm, lags, loaded.Positions)
	}
	run := start(ctx, e.Config, e.Flow, e.Logger)
	defer run.close()
	lags, err := run.waitCaughtUp(ctx, o.Timeout, o.Progress, missing, e.missingGrace())
	if err != nil {
		run.close()
		// Count what is not on the target from the positions the flow
		// stored as it stopped.
		positions := loaded.Positions
		if fresh, lerr := store.Load(ctx); lerr == nil {
			positions = fresh.Positions
		}
		all := lags
		if m, merr := e.unreplicated(ctx, srcAdm, lags, positions); merr == nil {
			all = append(slices.Clone(lags), m...)
		}
		rep.Partitions = e.partitionStates(all, nil)
		rep.NotReplicated = totalLag(all)
		return rep, err
	}

	// Every record is on the target: one last group sync, then stop.
	gs, err := run.flow.SyncGroupsNow(ctx)
	if err != nil {
		return rep, fmt.Errorf("final group sync: %w", err)
	}
	run.close()

	loaded, err = store.Load(ctx)
	if err != nil {
		return rep, err
	}
	// The catch-up run stopped every partition it replicated: each must
	// have its position stored Stopped, exact.
	caught := make([]string, 0, len(lags))
	for _, l := range lags {
		caught = append(caught, l.Topic)
	}
	if err := e.notClean(ctx, loaded, progress.InTopics(caught...)); err != nil {
		return rep, fmt.Errorf("the flow did not stop cleanly after catching up (%w); run the failover again", err)
	}
	rep.Groups = groupMoves(gs)
	stamps := e.lastTimestamps(ctx, loaded.Positions)
	rep.Partitions = e.partitionStates(lags, stamps)
	rep.NotReplicated = totalLag(lags)
	rep.RecoveryPoint = newest(stamps)
	rep.At = time.Now()
	if err := e.recordFailover(ctx, store, loaded, true); err != nil {
		return rep, err
	}
	return rep, groupErrors(rep.Groups)
}

// groupErrors reports the groups a failover could not move.
func groupErrors(moves []GroupMove) error {
	var failed []string
	for _, m := range moves {
		if m.Error != "" {
			failed = append(failed, m.Group)
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return fmt.Errorf("%d consumer groups could not be moved (%s); run the failover again", len(failed), strings.Join(failed, ", "))
}

// caughtUp reports whether every partition of every topic the flow
// replicates is copied to the source's end.
func caughtUp(fl *flow.Flow, lags []flow.PartitionLag) bool {
	st := fl.Status()
	parts := 0
	for _, t := range st.Topics {
		parts += int(t.Partitions)
	}
	if len(lags) < parts {
		return false
	}
	for _, l := range lags {
		if l.Lag > 0 || l.SourceNext < 0 {
			return false
		}
	}
	return true
}

func totalLag(lags []flow.PartitionLag) int64 {
	var n int64
	for _, l := range lags {
		n += l.Lag
	}
	return n
}

func (e *Env) unplanned(ctx context.Context) (Report, error) {
	rep := Report{Flow: e.Flow.Name, NotReplicated: -1}
	store := e.progressStore()
	loaded, err := store.Load(ctx)
	if err != nil {
		return rep, err
	}
	cps, err := e.checkpointStore().Load(ctx)
	if err != nil {
		return rep, err
	}
	cps = currentCheckpoints(cps, loaded.Positions)
	byGroup := map[string][]groupsync.Checkpoint{}
	for _, c := range cps {
		byGroup[c.Group] = append(byGroup[c.Group], c)
	}
	adm := kadm.NewClient(e.target)
	for _, g := range slices.Sorted(maps.Keys(byGroup)) {
		m := GroupMove{Group: g, Partitions: len(byGroup[g])}
		n, active, err := groupsync.Commit(ctx, adm, g, byGroup[g])
		m.Committed, m.Active = n, active
		if err != nil {
			m.Error = err.Error()
		}
		rep.Groups = append(rep.Groups, m)
	}
	stamps := e.lastTimestamps(ctx, loaded.Positions)
	var lags []flow.PartitionLag
	for id, pos := range loaded.Positions {
		lags = append(lags, flow.PartitionLag{Topic: id.Topic, Partition: id.Partition, SourceEnd: -1, SourceNext: pos.SourceNext, Lag: -1})
	}
	rep.Partitions = e.partitionStates(lags, stamps)
	rep.RecoveryPoint = newest(stamps)
	rep.At = time.Now()
	if err := e.recordFailover(ctx, store, loaded, false); err != nil {
		return rep, err
	}
	return rep, groupErrors(rep.Groups)
}

// recordFailover stores the failover and the target's end offsets at it,
// which a failback starts from.
func (e *Env) recordFailover(ctx context.Context, store *progress.Store, loaded progress.Loaded, planned bool) error {
	naming := e.naming()
	var names []string
	for id := range loaded.Positions {
		names = append(names, naming.TargetName(id.Topic))
	}
	slices.Sort(names)
	names = slices.Compact(names)
	ends := map[string]map[int32]int64{}
	if len(names) > 0 {
		listed, err := kadm.NewClient(e.target).ListEndOffsets(ctx, names...)
		if err != nil {
			return fmt.Errorf("listing target end offsets: %w", err)
		}
		listed.Each(func(o kadm.ListedOffset) {
			if ends[o.Topic] == nil {
				ends[o.Topic] = map[int32]int64{}
			}
			ends[o.Topic][o.Partition] = o.Offset
		})
	}
	f := progress.Failover{AtMs: time.Now().UnixMilli(), Planned: planned, TargetEnds: ends}
	if prev := loaded.Failover; prev != nil {
		// A failover run again (after groups could not all be moved)
		// keeps the first one's point: records clients wrote on the target
		// since then must be copied back by the failback.
		f.AtMs, f.Planned = prev.AtMs, prev.Planned
		for t, ps := range prev.TargetEnds {
			f.TargetEnds[t] = ps
		}
	}
	return store.PutFailover(ctx, f)
}

func (e *Env) partitionStates(lags []flow.PartitionLag, stamps map[progress.Partition]int64) []PartitionState {
	naming := e.naming()
	out := make([]PartitionState, 0, len(lags))
	for _, l := range lags {
		notRepl := l.Lag
		if l.SourceEnd < 0 {
			notRepl = -1
		}
		out = append(out, PartitionState{
			Topic: l.Topic, Partition: l.Partition, TargetTopic: naming.TargetName(l.Topic),
			SourceEnd: l.SourceEnd, Replicated: l.SourceNext, NotReplicated: notRepl,
			LastTimestampMs: stamps[progress.Partition{Topic: l.Topic, Partition: l.Partition}],
		})
	}
	slices.SortFunc(out, func(a, b PartitionState) int {
		if c := strings.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		return int(a.Partition - b.Partition)
	})
	return out
}

func groupMoves(rep groupsync.Report) []GroupMove {
	var out []GroupMove
	for _, g := range rep.Groups {
		m := GroupMove{Group: g.Group, Partitions: len(g.Checkpoints), Committed: g.Committed, Active: g.Active}
		if g.Err != nil {
			m.Error = g.Err.Error()
		}
		out = append(out, m)
	}
	return out
}

func newest(stamps map[progress.Partition]int64) time.Time {
	var ms int64
	for _, s := range stamps {
		ms = max(ms, s)
	}
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}
