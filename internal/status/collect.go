package status

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/groupsync"
	"github.com/kmirror/kmirror/internal/heartbeat"
	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/logread"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/topicsync"
)

// ErrIncomplete is wrapped by the error of Collect when some flow could
// not be read in full (a cluster did not answer, a topic could not be
// read); the report holds what could be.
var ErrIncomplete = errors.New("the status of some flows could not be read in full")

// heartbeatTail is how many records at the end of each partition of a
// heartbeat topic are read to find a flow's newest heartbeat.
const heartbeatTail = 200

// Flows returns the flows of cfg named name, or all of them when name is
// empty; an unknown name is an error naming the flows there are.
func Flows(cfg *config.Config, name string) ([]*config.Flow, error) {
	if name == "" {
		return cfg.Flows, nil
	}
	f, err := cfg.Flow(name)
	if err != nil {
		return nil, err
	}
	return []*config.Flow{f}, nil
}

// Collect reads the status of flows (of cfg) from their clusters. Each
// cluster is dialled within its dial_timeout and every request is bounded
// by its request_timeout, so Collect returns in bounded time. A cluster
// that cannot be reached, or a topic that cannot be read, is named in the
// flow's Errors and makes the error wrap ErrIncomplete; the report holds
// all the rest.
func Collect(ctx context.Context, cfg *config.Config, flows []*config.Flow, logger *slog.Logger) (Report, error) {
	now := time.Now()
	rep := Report{TimeMs: now.UnixMilli(), Config: cfg.File, Flows: []Flow{}, Routes: Routes(cfg, flows)}
	conns := &conns{cfg: cfg, logger: logger, byAlias: map[string]*conn{}}
	defer conns.close()
	incomplete := false
	for _, fc := range flows {
		fs := collectFlow(ctx, cfg, fc, conns, now, logger)
		if len(fs.Errors) > 0 {
			incomplete = true
		}
		rep.Flows = append(rep.Flows, fs)
	}
	if incomplete {
		return rep, ErrIncomplete
	}
	return rep, nil
}

// conn is a client of one cluster, or why there is none.
type conn struct {
	cl  *kgo.Client
	err error
}

// conns dials each cluster once.
type conns struct {
	cfg     *config.Config
	logger  *slog.Logger
	byAlias map[string]*conn
}

func (cs *conns) get(ctx context.Context, alias string) (*kgo.Client, error) {
	if c, ok := cs.byAlias[alias]; ok {
		return c.cl, c.err
	}
	c := &conn{}
	cs.byAlias[alias] = c
	cc := cs.cfg.Clusters[alias]
	cl, err := kafka.NewClient(cc, cs.logger)
	if err != nil {
		c.err = fmt.Errorf("cluster %q: %w", alias, err)
		return nil, c.err
	}
	pingCtx, cancel := context.WithTimeout(ctx, cc.DialTimeout)
	err = kafka.Ping(pingCtx, cl, cc)
	cancel()
	if err != nil {
		cl.Close()
		c.err = err
		return nil, err
	}
	c.cl = cl
	return cl, nil
}

func (cs *conns) close() {
	for _, c := range cs.byAlias {
		if c.cl != nil {
			c.cl.Close()
		}
	}
}

// collectFlow reads the status of one flow.
func collectFlow(ctx context.Context, cfg *config.Config, fc *config.Flow, cs *conns, now time.Time, logger *slog.Logger) (fs Flow) {
	fs = Flow{Name: fc.Name, Source: fc.Source, Target: fc.Target, State: StateUnknown}
	naming := policy.NewTopics(fc).WithGraph(cfg.Topology(), fc)
	fail := func(err error) { fs.Errors = append(fs.Errors, err.Error()) }
	timeout := func(alias string) (context.Context, context.CancelFunc) {
		return context.WithTimeout(ctx, cfg.Clusters[alias].RequestTimeout)
	}

	// The target holds the flow's state.
	var loaded progress.Loaded
	var rec *Record
	tgt, err := cs.get(ctx, fc.Target)
	if err != nil {
		fail(err)
	} else {
		fs.Heartbeat = &Heartbeat{Enabled: fc.HeartbeatInterval > 0}
		if fs.Heartbeat.Enabled {
			fs.Heartbeat.Topic = naming.HeartbeatTargetTopic()
		}
		fs.GroupSync = &GroupSync{Enabled: fc.SyncGroupOffsets}
		access := kafka.AccessOf(cfg.Clusters[fc.Target])
		rctx, cancel := timeout(fc.Target)
		loaded, err = progress.NewStore(tgt, policy.ProgressTopic(fc.Name)).WithAccess(access).Load(rctx)
		cancel()
		if err != nil {
			fail(err)
		}
		rctx, cancel = timeout(fc.Target)
		rec, err = readRecord(rctx, tgt, policy.StatusTopic(fc.Name))
		cancel()
		if err != nil {
			fail(fmt.Errorf("reading status topic %q: %w", policy.StatusTopic(fc.Name), access.Denied(kafka.OpRead, kafka.ResTopic, policy.StatusTopic(fc.Name), err)))
		}
		if fs.GroupSync.Enabled {
			rctx, cancel = timeout(fc.Target)
			cps, err := groupsync.NewStore(tgt, policy.CheckpointTopic(fc.Name)).WithAccess(access).Load(rctx)
			cancel()
			if err != nil {
				fail(err)
			} else {
				groups := map[string]bool{}
				for _, c := range cps {
					groups[c.Group] = true
					fs.GroupSync.LastCheckpointMs = max(fs.GroupSync.LastCheckpointMs, c.UpdatedMs)
				}
				fs.GroupSync.Groups = len(groups)
			}
		}
		if fs.Heartbeat.Enabled {
			rctx, cancel = timeout(fc.Target)
			last, err := newestHeartbeat(rctx, tgt, fs.Heartbeat.Topic, fc.Name)
			cancel()
			if err != nil {
				fail(fmt.Errorf("reading heartbeat topic %q on the target: %w", fs.Heartbeat.Topic, access.Denied(kafka.OpRead, kafka.ResTopic, fs.Heartbeat.Topic, err)))
			} else if !last.IsZero() {
				fs.Heartbeat.LastMs = last.UnixMilli()
				fs.Heartbeat.AgeSeconds = seconds(now.Sub(last))
			}
		}
	}
	// Whether the flow stopped cleanly is judged on the partitions of the
	// source topics it replicates: those the source lists and its filters
	// match, or, without the source, those its filters match. A deleted
	// or excluded topic's position does not count.
	replicated := func(p progress.Partition) bool { return naming.Matches(p.Topic) }
	defer func() {
		if tgt != nil {
			state(&fs, rec, loaded, replicated, now)
		}
	}()

	// The source has the end offsets the positions are compared with.
	src, err := cs.get(ctx, fc.Source)
	if err != nil {
		fail(err)
		return fs
	}
	if tgt == nil {
		return fs // no positions to compare with
	}
	rctx, cancel := timeout(fc.Source)
	defer cancel()
	names, err := lag(rctx, src, naming, fc, loaded, &fs, now, logger)
	if names != nil {
		replicated = progress.InTopics(names...)
	}
	if err != nil {
		fail(err)
	}
	return fs
}

// state sets the flow's state and what the running flow says of itself.
// The flow runs while its status record is fresh, unless every position
// of the partitions it replicates (replicated selects them) is Stopped: it
// then stopped cleanly (moments ago).
func state(fs *Flow, rec *Record, loaded progress.Loaded, replicated func(progress.Partition) bool, now time.Time) {
	fresh := false
	if rec != nil {
		fs.StatusUpdatedMs = rec.UpdatedMs
		interval := time.Duration(rec.IntervalMs) * time.Millisecond
		if interval <= 0 {
			interval = Interval
		}
		fresh = now.Sub(rec.Updated()) <= staleAfter(interval)
	}
	clean := len(loaded.Positions) > 0 && len(loaded.Unclean(replicated)) == 0
	switch {
	case fresh && !clean:
		fs.State = StateRunning
		fs.Owner = rec.Owner
		fs.StateDetail = fmt.Sprintf("on %s, status written %s ago", rec.Owner, formatAge(now.Sub(rec.Updated())))
		fs.Instances = rec.Instances
		fs.LatencyP50Ms, fs.LatencyP99Ms = rec.LatencyP50Ms, rec.LatencyP99Ms
		fs.RecoveryPointBytes, fs.RecoveryPointSeconds = rec.RecoveryPointBytes, rec.RecoveryPointSeconds
		if rec.Heartbeat != nil && rec.Heartbeat.LastMs > 0 {
			fs.Heartbeat.LatencyMs = &rec.Heartbeat.LatencyMs
		}
		if rec.GroupSyncAgeSeconds != nil {
			last := rec.UpdatedMs - int64(*rec.GroupSyncAgeSeconds*1000)
			fs.GroupSync.AgeSeconds = seconds(now.Sub(time.UnixMilli(last)))
		}
	case clean:
		fs.State = StateNotRunning
		fs.StateDetail = "stopped cleanly"
		if rec != nil {
			fs.StateDetail += fmt.Sprintf("; last status %s (%s ago, on %s)", stamp(rec.Updated()), formatAge(now.Sub(rec.Updated())), rec.Owner)
		}
	case rec != nil && len(loaded.Positions) == 0:
		fs.State = StateNotRunning
		fs.StateDetail = fmt.Sprintf("stale status since %s (%s ago, on %s); nothing replicated", stamp(rec.Updated()), formatAge(now.Sub(rec.Updated())), rec.Owner)
	case rec != nil:
		fs.State = StateNotRunning
		fs.StateDetail = fmt.Sprintf("stale status since %s (%s ago, on %s); the flow did not stop cleanly", stamp(rec.Updated()), formatAge(now.Sub(rec.Updated())), rec.Owner)
	case !loaded.Started && len(loaded.Positions) == 0:
		fs.State = StateNotRunning
		fs.StateDetail = "never started"
	default:
		fs.State = StateNotRunning
		fs.StateDetail = "no status stored"
	}
	if rec != nil {
		fs.LastError = rec.LastError
	}
	if loaded.Failover != nil {
		fs.StateDetail += fmt.Sprintf("; failed over at %s and not failed back", stamp(time.UnixMilli(loaded.Failover.AtMs)))
	}
	if fs.GroupSync.AgeSeconds == nil && fs.GroupSync.LastCheckpointMs > 0 {
		fs.GroupSync.AgeSeconds = seconds(now.Sub(time.UnixMilli(fs.GroupSync.LastCheckpointMs)))
	}
}

// staleAfter is how old the status record of a flow written every
// interval may be before the flow counts as not running: three intervals,
// at least 15 s.
func staleAfter(interval time.Duration) time.Duration {
	return max(3*interval, 15*time.Second)
}

// readRecord reads the newest status record of a status topic, or nil.
func readRecord(ctx context.Context, cl *kgo.Client, topic string) (*Record, error) {
	var out *Record
	err := logread.ReadTopic(ctx, cl, topic, logread.Options{}, func(kr *kgo.Record) bool {
		if r, ok := Decode(kr); ok {
			out = &r
		}
		return true
	})
	return out, err
}

// newestHeartbeat returns when the newest heartbeat of flow in the last
// records of topic was written, or the zero time if there is none.
func newestHeartbeat(ctx context.Context, cl *kgo.Client, topic, flow string) (time.Time, error) {
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return time.Time{}, err
	}
	if missingTopic(ends, topic) {
		return time.Time{}, nil
	}
	if err := ends.Error(); err != nil {
		return time.Time{}, err
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return time.Time{}, err
	}
	if err := starts.Error(); err != nil {
		return time.Time{}, err
	}
	var newest time.Time
	var readErr error
	ends.Each(func(e kadm.ListedOffset) {
		s, _ := starts.Lookup(topic, e.Partition)
		r := logread.Range{Topic: topic, Partition: e.Partition, From: max(s.Offset, e.Offset-heartbeatTail), End: e.Offset}
		err := logread.Read(ctx, cl, r, logread.Options{ReadUncommitted: true}, func(kr *kgo.Record) bool {
			if string(kr.Key) != flow {
				return true
			}
			if h, err := heartbeat.Decode(kr); err == nil && h.Time().After(newest) {
				newest = h.Time()
			}
			return true
		})
		if err != nil && readErr == nil {
			readErr = err
		}
	})
	return newest, readErr
}

// missingTopic reports whether a listing says topic does not exist.
func missingTopic(l kadm.ListedOffsets, topic string) bool {
	if len(l[topic]) == 0 {
		return true
	}
	for _, o := range l[topic] {
		if errors.Is(o.Err, kerr.UnknownTopicOrPartition) {
			return true
		}
	}
	return false
}

// lag compares the stored positions with the source: topics and
// partitions the flow's filters match, the records not yet copied and the
// age of the oldest of them. It returns the source topics the filters
// match, or nil if it could not list them.
func lag(ctx context.Context, src *kgo.Client, naming *policy.Topics, fc *config.Flow, loaded progress.Loaded, fs *Flow, now time.Time, logger *slog.Logger) ([]string, error) {
	adm := kadm.NewClient(src)
	details, err := adm.ListTopics(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing the source topics: %w", err)
	}
	names := []string{}
	ids := map[string]string{}
	partitions := 0
	for name, d := range details {
		if d.Err != nil || !naming.Matches(name) {
			continue
		}
		names = append(names, name)
		ids[name] = topicsync.TopicID(d.ID)
		partitions += len(d.Partitions)
	}
	slices.Sort(names)
	topics := len(names)
	fs.Topics, fs.Partitions = &topics, &partitions
	var total int64
	fs.LagRecords = &total
	zero := 0.0
	fs.LagSeconds = &zero
	if len(names) == 0 {
		return names, nil
	}
	starts, err := adm.ListStartOffsets(ctx, names...)
	if err != nil {
		return names, fmt.Errorf("listing the start offsets of the source topics: %w", err)
	}
	ends, err := adm.ListEndOffsets(ctx, names...)
	if err != nil {
		return names, fmt.Errorf("listing the end offsets of the source topics: %w", err)
	}
	heartbeats := naming.HeartbeatTopic()
	pending := map[string]map[int32]int64{}
	var partErr error
	ends.Each(func(e kadm.ListedOffset) {
		s, ok := starts.Lookup(e.Topic, e.Partition)
		if e.Err != nil || !ok || s.Err != nil {
			if partErr == nil {
				partErr = fmt.Errorf("listing the offsets of source partition %s/%d: %w", e.Topic, e.Partition, errors.Join(e.Err, s.Err))
			}
			return
		}
		if heartbeats != "" && e.Topic == heartbeats {
			return // its freshness is the heartbeat age
		}
		next := s.Offset
		if pos, ok := loaded.Positions[progress.Partition{Topic: e.Topic, Partition: e.Partition}]; ok &&
			(pos.TopicID == "" || ids[e.Topic] == "" || pos.TopicID == ids[e.Topic]) {
			next = max(pos.SourceNext, s.Offset)
		}
		if n := e.Offset - next; n > 0 {
			total += n
			if pending[e.Topic] == nil {
				pending[e.Topic] = map[int32]int64{}
			}
			pending[e.Topic][e.Partition] = next
		}
	})
	if len(pending) > 0 {
		oldest, ok, err := OldestPending(ctx, src, pending)
		switch {
		case ok:
			age := max(now.Sub(oldest), 0).Seconds()
			fs.LagSeconds = &age
		default:
			fs.LagSeconds = nil
			logger.Warn("cannot read the oldest records not yet copied; lag in seconds unknown", "flow", fc.Name, "err", err)
		}
	}
	return names, partErr
}
