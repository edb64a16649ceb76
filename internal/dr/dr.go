// Package dr holds the disaster-recovery operations on a flow: translating
// a consumer group's offsets, and failing clients over from the flow's
// source to its target, planned or with the source gone.
package dr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/flow"
	"github.com/kmirror/kmirror/internal/groupsync"
	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/progress"
)

// Env is a flow and clients for its clusters.
type Env struct {
	Config *config.Config
	Flow   *config.Flow
	Logger *slog.Logger

	target *kgo.Client
}

// Open finds flow name in cfg and connects to its target cluster, which
// every operation needs.
func Open(ctx context.Context, cfg *config.Config, name string, logger *slog.Logger) (*Env, error) {
	fc, err := cfg.Flow(name)
	if err != nil {
		return nil, err
	}
	tc := cfg.Clusters[fc.Target]
	tgt, err := kafka.NewClient(tc, logger, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))
	if err != nil {
		return nil, err
	}
	pingCtx, cancel := context.WithTimeout(ctx, tc.DialTimeout)
	defer cancel()
	if err := kafka.Ping(pingCtx, tgt, tc); err != nil {
		tgt.Close()
		return nil, fmt.Errorf("flow %q: the target is needed: %w", name, err)
	}
	return &Env{Config: cfg, Flow: fc, Logger: logger, target: tgt}, nil
}

// Close releases the clients.
func (e *Env) Close() { e.target.Close() }

func (e *Env) progressStore() *progress.Store {
	return progress.NewStore(e.target, policy.ProgressTopic(e.Flow.Name))
}

func (e *Env) checkpointStore() *groupsync.Store {
	return groupsync.NewStore(e.target, policy.CheckpointTopic(e.Flow.Name))
}

// source connects to the flow's source, or reports why it cannot.
func (e *Env) source(ctx context.Context) (*kgo.Client, error) {
	sc := e.Config.Clusters[e.Flow.Source]
	cl, err := kafka.NewClient(sc, e.Logger)
	if err != nil {
		return nil, err
	}
	pingCtx, cancel := context.WithTimeout(ctx, sc.DialTimeout)
	defer cancel()
	if err := kafka.Ping(pingCtx, cl, sc); err != nil {
		cl.Close()
		return nil, err
	}
	return cl, nil
}

// Translated is one partition's committed offset of a group and its
// translation.
type Translated struct {
	Topic        string `json:"topic"`
	Partition    int32  `json:"partition"`
	SourceOffset int64  `json:"source_offset"`
	TargetTopic  string `json:"target_topic"`
	TargetOffset int64  `json:"target_offset"`
	Exact        bool   `json:"exact"`
	// From is "source" when the group's offsets were read from the source
	// now, or "checkpoint" when the source was unreachable.
	From string `json:"from"`
	// CheckpointAgeMs is the checkpoint's age, for From == "checkpoint".
	CheckpointAgeMs int64 `json:"checkpoint_age_ms,omitempty"`
}

// currentCheckpoints drops the checkpoints taken on an earlier topic of
// the same name: a source topic deleted and created again has a new topic
// ID, and offsets of the old one mean nothing on the new one's copy.
func currentCheckpoints(cps []groupsync.Checkpoint, positions map[progress.Partition]progress.Position) []groupsync.Checkpoint {
	out := cps[:0:0]
	for _, c := range cps {
		pos, ok := positions[progress.Partition{Topic: c.Topic, Partition: c.Partition}]
		if c.TopicID != "" && ok && pos.TopicID != "" && pos.TopicID != c.TopicID {
			continue
		}
		out = append(out, c)
	}
	return out
}

// Translate translates group's committed source offsets with the flow's
// offset map, reading them from the source, or from the checkpoints in the
// target when the source cannot be reached.
func (e *Env) Translate(ctx context.Context, group string) ([]Translated, error) {
	loaded, err := e.progressStore().Load(ctx)
	if err != nil {
		return nil, err
	}
	naming := e.naming()
	src, srcErr := e.source(ctx)
	if srcErr != nil {
		e.Logger.Warn("source unreachable; using the checkpoints stored in the target", "err", srcErr)
		cps, err := e.checkpointStore().Load(ctx)
		if err != nil {
			return nil, err
		}
		cps = currentCheckpoints(cps, loaded.Positions)
		var out []Translated
		now := time.Now().UnixMilli()
		for _, c := range cps {
			if c.Group == group {
				out = append(out, Translated{Topic: c.Topic, Partition: c.Partition, SourceOffset: c.SourceOffset,
					TargetTopic: c.TargetTopic, TargetOffset: c.TargetOffset, Exact: c.Exact, From: "checkpoint", CheckpointAgeMs: now - c.UpdatedMs})
			}
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("source unreachable (%w) and no checkpoint of group %q in the target", srcErr, group)
		}
		return out, nil
	}
	defer src.Close()
	committed, err := kadm.NewClient(src).FetchOffsets(ctx, group)
	if err != nil {
		return nil, fmt.Errorf("fetching the committed offsets of group %q on the source: %w", group, err)
	}
	// The same rule as the group sync: no record of the target's other
	// writers that the group has not read in any form is passed.
	peers := groupsync.NewPeers(e.Config, e.Flow, src, e.target)
	warn, err := peers.Load(ctx)
	if err != nil {
		return nil, err
	}
	if warn != nil {
		e.Logger.Warn("offsets rounded down: what other writers put into the target cannot be known", "err", warn)
	}
	var out []Translated
	for _, o := range committed.Sorted() {
		id := progress.Partition{Topic: o.Topic, Partition: o.Partition}
		pos, ok := loaded.Positions[id]
		if o.Err != nil || o.At < 0 || !ok {
			continue
		}
		res := offsets.Result{}
		if pos.TargetNext >= 0 {
			res = offsets.NewMap(loaded.Runs[id]).Translate(o.At, pos.TargetNext)
		}
		if limit, bounded := peers.Limit(o.Topic, o.Partition, o.At, loaded.Runs[id]); bounded {
			res = res.Below(limit, loaded.Runs[id])
		}
		out = append(out, Translated{Topic: o.Topic, Partition: o.Partition, SourceOffset: o.At,
			TargetTopic: naming.TargetName(o.Topic), TargetOffset: res.Target, Exact: res.Exact, From: "source"})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("group %q has no committed offset on a topic the flow replicates", group)
	}
	return out, nil
}

// PartitionState is where one partition stands at a failover.
type PartitionState struct {
	Topic       string `json:"topic"`
	Partition   int32  `json:"partition"`
	TargetTopic string `json:"target_topic"`
	// SourceEnd is the source's end offset, or -1 if unknown.
	SourceEnd int64 `json:"source_end"`
	// Replicated is the next source offset to copy: every record before
	// it is on the target.
	Replicated int64 `json:"replicated"`
	// NotReplicated is SourceEnd - Replicated, or -1 if unknown.
	NotReplicated int64 `json:"not_replicated"`
	// LastTimestampMs is the timestamp of the newest record copied, or 0.
	LastTimestampMs int64 `json:"last_timestamp_ms,omitempty"`
}

// GroupMove is what a failover did for one consumer group.
type GroupMove struct {
	Group      string `json:"group"`
	Partitions int    `json:"partitions"`
	Committed  int    `json:"committed"`
	Active     bool   `json:"active_on_target"`
	Error      string `json:"error,omitempty"`
}

// Report is the outcome of a failover.
type Report struct {
	Flow       string           `json:"flow"`
	Planned    bool             `json:"planned"`
	At         time.Time        `json:"at"`
	Partitions []PartitionState `json:"partitions"`
	Groups     []GroupMove      `json:"groups"`
	// NotReplicated is the number of source records not on the target,
	// or -1 if unknown (source unreachable).
	NotReplicated int64 `json:"not_replicated"`
	// RecoveryPoint is the timestamp of the newest record on the target
	// that the flow copied; with the source gone, records after each
	// partition's Replicated offset are lost.
	RecoveryPoint time.Time `json:"recovery_point"`
}

// ErrNotClean is returned when the flow is running or crashed.
var ErrNotClean = errors.New("the flow is running, or its last run did not stop cleanly")

// notClean checks that the flow stopped cleanly for the partitions keep
// selects: no instance runs it (its ownership group on the target has no
// member) and each of their stored positions is Stopped, stored by the
// partition's last owner as it stopped with every write acknowledged.
// With several instances each stores its own partitions so as it stops.
// It returns nil when clean, else an error wrapping ErrNotClean that
// names the running instances or the partitions not stopped cleanly.
func (e *Env) notClean(ctx context.Context, loaded progress.Loaded, keep func(progress.Partition) bool) error {
	if running := e.instances(ctx); len(running) > 0 {
		return fmt.Errorf("%w: it runs on %s", ErrNotClean, strings.Join(running, ", "))
	}
	unclean := loaded.Unclean(keep)
	if len(unclean) == 0 {
		return nil
	}
	const shown = 5
	names := make([]string, 0, shown)
	for _, p := range unclean[:min(len(unclean), shown)] {
		names = append(names, p.String())
	}
	more := ""
	if len(unclean) > shown {
		more = fmt.Sprintf(" and %d more", len(unclean)-shown)
	}
	return fmt.Errorf("%w: %d partitions were not stopped cleanly by their last owner (%s%s): an instance runs the flow, or was killed",
		ErrNotClean, len(unclean), strings.Join(names, ", "), more)
}

// instances returns the kmirror instances running the flow, from the
// members of its ownership group on the target; nil if there are none
// or the group cannot be described (the positions then tell).
func (e *Env) instances(ctx context.Context) []string {
	group := policy.OwnershipGroup(e.Flow)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	described, err := kadm.NewClient(e.target).DescribeGroups(ctx, group)
	if err != nil {
		e.Logger.Debug("cannot describe the flow's ownership group", "group", group, "err", err)
		return nil
	}
	g, ok := described[group]
	if !ok || g.Err != nil {
		return nil
	}
	var out []string
	for _, m := range g.Members {
		// A member's join metadata names its instance (host:pid).
		var meta struct {
			Instance string `json:"instance"`
		}
		// The broker returns it only while the group is stable; else the
		// member's host and id say who it is.
		name := strings.TrimPrefix(m.ClientHost, "/") + " (member " + m.MemberID + ")"
		if raw, ok := m.Join.Raw(); ok && json.Unmarshal(raw, &meta) == nil && meta.Instance != "" {
			name = meta.Instance
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// lastTimestamps reads, for every position, the newest record the flow
// wrote to the target.
func (e *Env) lastTimestamps(ctx context.Context, positions map[progress.Partition]progress.Position) map[progress.Partition]int64 {
	naming := e.naming()
	out := map[progress.Partition]int64{}
	want := map[string]map[int32]kgo.Offset{}
	byTarget := map[string]string{}
	for id, pos := range positions {
		if pos.TargetNext <= 0 {
			continue
		}
		t := naming.TargetName(id.Topic)
		byTarget[t] = id.Topic
		if want[t] == nil {
			want[t] = map[int32]kgo.Offset{}
		}
		want[t][id.Partition] = kgo.NewOffset().At(pos.TargetNext - 1)
	}
	if len(want) == 0 {
		return out
	}
	reader, err := kgo.NewClient(append(slices.Clone(e.target.Opts()), kgo.ConsumePartitions(want))...)
	if err != nil {
		return out
	}
	defer reader.Close()
	remaining := 0
	for _, ps := range want {
		remaining += len(ps)
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for remaining > 0 && ctx.Err() == nil {
		fetches := reader.PollFetches(ctx)
		fetches.EachRecord(func(r *kgo.Record) {
			id := progress.Partition{Topic: byTarget[r.Topic], Partition: r.Partition}
			if _, done := out[id]; !done && r.Offset == positions[id].TargetNext-1 {
				out[id] = r.Timestamp.UnixMilli()
				remaining--
			}
		})
	}
	return out
}

// running is a flow run in-process by a DR command.
type running struct {
	flow *flow.Flow
	stop context.CancelFunc
	wg   sync.WaitGroup
}

// start runs flow fc of cfg in-process.
func start(ctx context.Context, cfg *config.Config, fc *config.Flow, logger *slog.Logger) *running {
	r := &running{flow: flow.New(cfg, fc, metrics.New(), logger)}
	runCtx, stop := context.WithCancel(ctx)
	r.stop = stop
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		_ = r.flow.Run(runCtx)
	}()
	return r
}

// close stops the flow and waits until it has stored its progress.
func (r *running) close() {
	r.stop()
	r.wg.Wait()
}

// waitCaughtUp polls until the flow has copied every source record and
// returns the partitions' lag then; on timeout it returns the last lag
// seen and ErrLagTimeout. With missing set, the flow has caught up only
// once missing finds no partition it should replicate and does not: if
// some stay missing for grace after the rest caught up, it returns a
// NotReplicatedError naming them.
func (r *running) waitCaughtUp(ctx context.Context, timeout time.Duration, progress func(int64),
	missing func(context.Context, []flow.PartitionLag) ([]flow.PartitionLag, error), grace time.Duration) ([]flow.PartitionLag, error) {
	deadline := time.Now().Add(timeout)
	var missingSince time.Time
	var miss []flow.PartitionLag
	var missErr error
	for {
		lags, err := r.flow.Lag(ctx)
		if err == nil && caughtUp(r.flow, lags) {
			if missing == nil {
				return lags, nil
			}
			miss, missErr = missing(ctx, lags)
			switch {
			case missErr == nil && len(miss) == 0:
				return lags, nil
			case missErr == nil && missingSince.IsZero():
				missingSince = time.Now()
			case missErr == nil && time.Since(missingSince) >= grace:
				return lags, &NotReplicatedError{Partitions: miss}
			}
		} else {
			missingSince = time.Time{}
		}
		if err == nil && progress != nil {
			progress(totalLag(lags) + totalLag(miss))
		}
		if time.Now().After(deadline) {
			if missing != nil && err == nil {
				if m, merr := missing(ctx, lags); merr == nil && len(m) > 0 {
					return lags, errors.Join(ErrLagTimeout, &NotReplicatedError{Partitions: m})
				}
			}
			if err = errors.Join(err, missErr); err != nil {
				return lags, fmt.Errorf("%w: %w", ErrLagTimeout, err)
			}
			return lags, ErrLagTimeout
		}
		select {
		case <-ctx.Done():
			return lags, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// NotReplicatedError names the source topics a flow's filters match of
// which some partitions are not replicated: their target topic could not
// be created or grown (the flow logs why), or the flow has not picked them
// up.
type NotReplicatedError struct {
	// Partitions are the partitions not replicated, sorted.
	Partitions []flow.PartitionLag
}

func (e *NotReplicatedError) Error() string {
	type count struct{ partitions, records int64 }
	byTopic := map[string]*count{}
	for _, p := range e.Partitions {
		c := byTopic[p.Topic]
		if c == nil {
			c = &count{}
			byTopic[p.Topic] = c
		}
		c.partitions++
		c.records += max(p.Lag, 0)
	}
	var parts []string
	for _, t := range slices.Sorted(maps.Keys(byTopic)) {
		c := byTopic[t]
		parts = append(parts, fmt.Sprintf("%s (%d partitions, %d records)", t, c.partitions, c.records))
	}
	return fmt.Sprintf("%d source topics the flow must replicate are not (fully) on the target: %s; "+
		"the flow logs why for each (a target topic that could not be created or grown); fix it and run the failover again, "+
		"or exclude the topics with topics_exclude", len(parts), strings.Join(parts, ", "))
}

// missingGrace is how long a planned failover waits, once everything else
// is copied, for matching source topics the flow does not replicate yet:
// the flow retries creating or growing their targets every
// topic_refresh_interval.
func (e *Env) missingGrace() time.Duration {
	return 2*e.Flow.TopicRefreshInterval + 10*time.Second
}

// unreplicated lists the partitions of the source topics the flow's
// filters match that lags does not cover. Each counts from its position,
// or from the source's start offset if it has none.
func (e *Env) unreplicated(ctx context.Context, adm *kadm.Client, lags []flow.PartitionLag,
	positions map[progress.Partition]progress.Position) ([]flow.PartitionLag, error) {
	covered := map[progress.Partition]bool{}
	for _, l := range lags {
		covered[progress.Partition{Topic: l.Topic, Partition: l.Partition}] = true
	}
	topics, err := e.matched(ctx, adm)
	if err != nil {
		return nil, err
	}
	var names []string
	for name, d := range topics {
		if d.Err != nil {
			return nil, fmt.Errorf("describing topic %s on %q: %w", name, e.Flow.Source, d.Err)
		}
		for p := range d.Partitions {
			if !covered[progress.Partition{Topic: name, Partition: p}] {
				names = append(names, name)
				break
			}
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	slices.Sort(names)
	ends, err := adm.ListEndOffsets(ctx, names...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("listing end offsets on %q: %w", e.Flow.Source, err)
	}
	starts, err := adm.ListStartOffsets(ctx, names...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("listing start offsets on %q: %w", e.Flow.Source, err)
	}
	var out []flow.PartitionLag
	ends.Each(func(o kadm.ListedOffset) {
		id := progress.Partition{Topic: o.Topic, Partition: o.Partition}
		if covered[id] {
			return
		}
		from, next := int64(0), int64(-1)
		if s, ok := starts.Lookup(o.Topic, o.Partition); ok {
			from = s.Offset
		}
		if pos, ok := positions[id]; ok {
			next = pos.SourceNext
			from = max(from, next)
		}
		out = append(out, flow.PartitionLag{Topic: o.Topic, Partition: o.Partition, SourceEnd: o.Offset, SourceNext: next, Lag: max(o.Offset-from, 0)})
	})
	slices.SortFunc(out, func(a, b flow.PartitionLag) int {
		if c := strings.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		return int(a.Partition - b.Partition)
	})
	return out, nil
}

// naming is the flow's topic policy, as the running flow applies it: with
// every flow of the configuration, for loop checks and heartbeat topics.
func (e *Env) naming() *policy.Topics {
	cfg := e.Config
	if cfg == nil {
		cfg = &config.Config{Flows: []*config.Flow{e.Flow}}
	}
	return policy.NewTopics(e.Flow).WithGraph(cfg.Topology(), e.Flow)
}

// matched lists the source topics the flow's filters match: the topics it
// replicates, and a failover moves.
func (e *Env) matched(ctx context.Context, adm *kadm.Client) (kadm.TopicDetails, error) {
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing topics on %q: %w", e.Flow.Source, err)
	}
	naming := e.naming()
	for name, d := range topics {
		if d.IsInternal || !naming.Matches(name) {
			delete(topics, name)
		}
	}
	return topics, nil
}
