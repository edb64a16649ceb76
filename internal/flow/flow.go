// Package flow wires one replication flow together: clients for its two
// clusters, topic sync, the data plane and its progress, and health
// checks. A Flow owns everything it starts and stops it when its context
// ends.
package flow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/groupsync"
	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/replicate"
	"github.com/kmirror/kmirror/internal/resume"
	"github.com/kmirror/kmirror/internal/topicsync"
)

// healthInterval is how often both clusters are pinged for readiness.
const healthInterval = 3 * time.Second

// Flow replicates the topics of one source cluster into one target cluster.
type Flow struct {
	cfg            *config.Flow
	source, target *config.Cluster
	metrics        *metrics.Metrics
	logger         *slog.Logger

	sourceUp, targetUp atomic.Bool
	started            atomic.Bool // setup done, data plane running
	repl               atomic.Pointer[replicate.Replicator]
	topics             atomic.Pointer[[]topicsync.Topic]
	live               atomic.Pointer[live]
}

// live is what a running flow shares with commands acting on it.
type live struct {
	src     *kgo.Client
	groupMu sync.Mutex // serialises group sync passes
	groups  *groupsync.Syncer
	seeded  bool
	store   *groupsync.Store
}

// New returns the flow fc of configuration cfg.
func New(cfg *config.Config, fc *config.Flow, m *metrics.Metrics, logger *slog.Logger) *Flow {
	return &Flow{
		cfg:     fc,
		source:  cfg.Clusters[fc.Source],
		target:  cfg.Clusters[fc.Target],
		metrics: m,
		logger:  logger.With("flow", fc.Name),
	}
}

// Name is the flow's name.
func (f *Flow) Name() string { return f.cfg.Name }

// Config is the flow's configuration.
func (f *Flow) Config() *config.Flow { return f.cfg }

// Check connects to both clusters once and reports the first that cannot
// be reached within its dial timeout.
func (f *Flow) Check(ctx context.Context) error {
	for _, c := range []*config.Cluster{f.source, f.target} {
		cl, err := kafka.NewClient(c, nil)
		if err != nil {
			return err
		}
		pingCtx, cancel := context.WithTimeout(ctx, c.DialTimeout)
		err = kafka.Ping(pingCtx, cl, c)
		cancel()
		cl.Close()
		if err != nil {
			return fmt.Errorf("flow %q: %w", f.cfg.Name, err)
		}
	}
	return nil
}

// Ready reports whether the flow is replicating and reached both clusters
// at its last check.
func (f *Flow) Ready() bool {
	return f.started.Load() && f.sourceUp.Load() && f.targetUp.Load()
}

// Status is a snapshot of the flow for the API and the demo.
type Status struct {
	Name     string            `json:"name"`
	Source   string            `json:"source"`
	Target   string            `json:"target"`
	Ready    bool              `json:"ready"`
	SourceUp bool              `json:"source_up"`
	TargetUp bool              `json:"target_up"`
	Topics   []topicsync.Topic `json:"topics"`
	Totals   replicate.Totals  `json:"totals"`
}

// Status returns a snapshot of the flow.
func (f *Flow) Status() Status {
	s := Status{
		Name: f.cfg.Name, Source: f.cfg.Source, Target: f.cfg.Target,
		Ready: f.Ready(), SourceUp: f.sourceUp.Load(), TargetUp: f.targetUp.Load(),
	}
	if t := f.topics.Load(); t != nil {
		s.Topics = *t
	}
	if r := f.repl.Load(); r != nil {
		s.Totals = r.Totals()
	}
	return s
}

// Run replicates until ctx is done. Faults of either cluster are retried
// with backoff; Run returns only when ctx ends.
func (f *Flow) Run(ctx context.Context) error {
	srcClient, err := kafka.NewClient(f.source, f.logger, f.consumerOpts()...)
	if err != nil {
		return err
	}
	defer srcClient.Close()
	tgtClient, err := kafka.NewClient(f.target, f.logger, f.producerOpts()...)
	if err != nil {
		return err
	}
	defer tgtClient.Close()
	// Bookkeeping (progress, checkpoints) has a client of its own so its
	// small writes never queue behind the data plane's buffered records.
	metaClient, err := kafka.NewClient(f.target, f.logger,
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		return err
	}
	defer metaClient.Close()

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.watchHealth(ctx, srcClient, tgtClient)
	}()

	store := progress.NewStore(metaClient, policy.ProgressTopic(f.cfg.Name))
	loaded, err := f.setup(ctx, store)
	if err != nil {
		return nil // ctx ended during setup
	}

	repl := replicate.New(replicate.Options{
		Flow:               f.cfg.Name,
		Source:             srcClient,
		Target:             tgtClient,
		Progress:           store,
		ProgressInterval:   f.cfg.ProgressInterval,
		OffsetMapRetention: f.cfg.OffsetMapRetention,
		OffsetMapMaxRuns:   f.cfg.OffsetMapMaxRuns,
		Metrics:            f.metrics,
		Logger:             f.logger,
	})
	f.repl.Store(repl)
	lv := &live{src: srcClient, store: groupsync.NewStore(metaClient, policy.CheckpointTopic(f.cfg.Name))}
	lv.groups = groupsync.New(groupsync.Options{
		Source: kadm.NewClient(srcClient), Target: kadm.NewClient(metaClient),
		Include: f.cfg.GroupsRegexps, Exclude: f.cfg.GroupsExcludeRegexps,
		TargetName: policy.NewTopics(f.cfg).TargetName,
		Translator: repl, Store: lv.store, Logger: f.logger,
	})
	f.live.Store(lv)
	f.started.Store(true)
	defer f.started.Store(false)

	wg.Add(1)
	go func() {
		defer wg.Done()
		f.syncTopics(ctx, srcClient, tgtClient, store, repl, loaded)
	}()
	if f.cfg.SyncGroupOffsets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.syncGroups(ctx, lv)
		}()
	}
	f.logger.Info("flow started", "source", f.cfg.Source, "target", f.cfg.Target,
		"progress_topic", store.Topic(), "resumed_partitions", len(loaded.Positions))
	err = repl.Run(ctx)
	if err == nil {
		// Every write was acknowledged and its position stored: the next
		// run need not wait for stray writes of this one.
		stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := store.MarkStopped(stopCtx); err != nil {
			f.logger.Warn("could not record the clean stop", "err", err)
		}
		cancel()
	} else {
		f.logger.Warn("flow stopped with writes unconfirmed; they will be checked on restart", "err", err)
	}
	f.logger.Info("flow stopped", "replicated_records", repl.Totals().Records)
	return nil
}

// setup creates and reads the progress topic, retrying until it succeeds
// or ctx ends.
func (f *Flow) setup(ctx context.Context, store *progress.Store) (progress.Loaded, error) {
	for attempt := 1; ; attempt++ {
		loaded, err := f.trySetup(ctx, store)
		if err == nil {
			return loaded, nil
		}
		if ctx.Err() != nil {
			return loaded, ctx.Err()
		}
		f.metrics.Errors.WithLabelValues(f.cfg.Name, metrics.ErrProgress).Inc()
		wait := retryDelay(attempt)
		f.logger.Error("cannot read flow progress from the target; retrying", "retry_in", wait.String(), "err", err)
		if !sleep(ctx, wait) {
			return loaded, ctx.Err()
		}
	}
}

func (f *Flow) trySetup(ctx context.Context, store *progress.Store) (progress.Loaded, error) {
	ctx, cancel := context.WithTimeout(ctx, f.target.RequestTimeout+30*time.Second)
	defer cancel()
	if err := store.Ensure(ctx, f.cfg.ReplicationFactor); err != nil {
		return progress.Loaded{}, err
	}
	loaded, err := store.Load(ctx)
	if err != nil {
		return loaded, err
	}
	return loaded, store.MarkRunning(ctx)
}

func (f *Flow) consumerOpts() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.FetchMaxBytes(f.cfg.Consumer.FetchMaxBytes),
		kgo.FetchMaxPartitionBytes(f.cfg.Consumer.FetchMaxPartitionBytes),
		kgo.FetchMaxWait(500 * time.Millisecond),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// Transaction markers are not copied, but the position must move
		// past them, or lag would never reach 0 after a transaction.
		kgo.KeepControlRecords(),
	}
	if f.cfg.Consumer.IsolationLevel == "read_committed" {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	return opts
}

func (f *Flow) producerOpts() []kgo.Opt {
	p := f.cfg.Producer
	opts := []kgo.Opt{
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(p.Linger),
		kgo.ProducerBatchMaxBytes(p.BatchMaxBytes),
		kgo.MaxBufferedBytes(int(p.MaxBufferedBytes)),
		kgo.MaxBufferedRecords(1_000_000),
		kgo.ProducerBatchCompression(compression(p.Compression)),
	}
	if p.Acks == "leader" {
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	} else {
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	}
	return opts
}

func compression(name string) kgo.CompressionCodec {
	switch name {
	case "gzip":
		return kgo.GzipCompression()
	case "snappy":
		return kgo.SnappyCompression()
	case "zstd":
		return kgo.ZstdCompression()
	case "none":
		return kgo.NoCompression()
	default:
		return kgo.Lz4Compression()
	}
}

// watchHealth pings both clusters periodically and keeps the up flags and
// gauges current; a cluster going down or coming back is logged once.
func (f *Flow) watchHealth(ctx context.Context, src, tgt *kgo.Client) {
	check := func(cl *kgo.Client, c *config.Cluster, up *atomic.Bool) {
		pingCtx, cancel := context.WithTimeout(ctx, min(c.DialTimeout, healthInterval))
		err := kafka.Ping(pingCtx, cl, c)
		cancel()
		if ctx.Err() != nil {
			return
		}
		was := up.Swap(err == nil)
		g := f.metrics.ClusterUp.WithLabelValues(f.cfg.Name, c.Alias)
		if err != nil {
			g.Set(0)
			f.metrics.Errors.WithLabelValues(f.cfg.Name, metrics.ErrUnreachable).Inc()
			if was {
				f.logger.Error("cluster unreachable; retrying", "cluster", c.Alias, "err", err)
			}
			return
		}
		g.Set(1)
		if !was {
			f.logger.Info("cluster reachable", "cluster", c.Alias)
		}
	}
	// Assume reachable at start (Check ran); the first pass corrects it.
	f.sourceUp.Store(true)
	f.targetUp.Store(true)
	t := time.NewTicker(healthInterval)
	defer t.Stop()
	for {
		check(src, f.source, &f.sourceUp)
		check(tgt, f.target, &f.targetUp)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// syncTopics runs topic sync every refresh interval and hands new
// partitions to the data plane.
func (f *Flow) syncTopics(ctx context.Context, src, tgt *kgo.Client, store *progress.Store, repl *replicate.Replicator, loaded progress.Loaded) {
	cls := clients{src: src, tgt: tgt, srcAdmin: kadm.NewClient(src), tgtAdmin: kadm.NewClient(tgt)}
	syncer := topicsync.New(cls.srcAdmin, cls.tgtAdmin, policy.NewTopics(f.cfg), f.cfg.ReplicationFactor, f.logger)
	// start_from applies only to partitions present at the flow's very
	// first start; everything discovered later starts at its beginning.
	firstStart := !loaded.Started
	markedStarted := loaded.Started
	if !loaded.CleanStop && len(loaded.Positions) > 0 {
		f.settleTarget(ctx, cls.tgtAdmin, loaded)
	}
	var errLogged time.Time
	t := time.NewTicker(f.cfg.TopicRefreshInterval)
	defer t.Stop()
	for {
		err := f.syncOnce(ctx, syncer, cls, repl, loaded, firstStart)
		if err == nil && !markedStarted {
			if err = store.MarkStarted(ctx); err == nil {
				markedStarted = true
			}
		}
		if err == nil {
			firstStart = false
		} else if ctx.Err() == nil {
			f.metrics.Errors.WithLabelValues(f.cfg.Name, metrics.ErrTopicSync).Inc()
			if time.Since(errLogged) > 30*time.Second {
				errLogged = time.Now()
				f.logger.Error("topic sync failed; retrying", "err", err)
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
func (f *Flow) settleTarget(ctx context.Context, adm *kadm.Client, loaded progress.Loaded) {
	naming := policy.NewTopics(f.cfg)
	seen := map[string]bool{}
	var names []string
	for p := range loaded.Positions {
		if t := naming.TargetName(p.Topic); !seen[t] {
			seen[t] = true
			names = append(names, t)
		}
	}
	const quiet, limit = time.Second, 15 * time.Second
	deadline := time.Now().Add(limit)
	var last kadm.ListedOffsets
	for time.Now().Before(deadline) {
		ends, err := adm.ListEndOffsets(ctx, names...)
		if err != nil {
			return
		}
		if last != nil && sameEnds(last, ends) {
			return
		}
		last = ends
		if !sleep(ctx, quiet) {
			return
		}
	}
	f.logger.Warn("target partitions still growing after an unclean stop; resuming anyway", "waited", limit.String())
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

// clients are a flow's connections to its two clusters.
type clients struct {
	src, tgt           *kgo.Client
	srcAdmin, tgtAdmin *kadm.Client
}

func (f *Flow) syncOnce(ctx context.Context, syncer *topicsync.Syncer, cls clients,
	repl *replicate.Replicator, loaded progress.Loaded, firstStart bool) error {
	res, err := syncer.Sync(ctx)
	if err != nil {
		return err
	}
	f.metrics.Errors.WithLabelValues(f.cfg.Name, metrics.ErrTopicSync).Add(float64(len(res.Errors)))
	f.metrics.TopicsCreated.WithLabelValues(f.cfg.Name).Add(float64(len(res.Created)))
	if len(res.Removed) > 0 {
		f.metrics.Errors.WithLabelValues(f.cfg.Name, metrics.ErrTopicDeleted).Add(float64(len(res.Removed)))
		f.logger.Warn("source topics deleted; stopped replicating them", "topics", res.Removed)
		repl.Remove(res.Removed)
	}
	ready := res.Ready
	f.topics.Store(&ready)
	if len(ready) == 0 {
		return nil
	}

	names := make([]string, len(ready))
	for i, t := range ready {
		names[i] = t.Source
	}
	ends, err := cls.srcAdmin.ListEndOffsets(ctx, names...)
	if err != nil {
		return fmt.Errorf("listing source end offsets: %w", err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			repl.SetHighWatermark(o.Topic, o.Partition, o.Offset)
		}
	})

	var newTopics []topicsync.Topic
	for _, t := range ready {
		for p := int32(0); p < t.Partitions; p++ {
			if !repl.Has(t.Source, p) {
				newTopics = append(newTopics, t)
				break
			}
		}
	}
	if len(newTopics) == 0 {
		return nil
	}
	as, err := f.assignments(ctx, cls, repl, newTopics, ends, loaded, firstStart)
	if err != nil {
		return err
	}
	repl.Add(as)
	return nil
}

// assignments computes where each new partition starts: its stored
// position, or else the flow's start_from (first start only) or the
// partition's earliest offset.
func (f *Flow) assignments(ctx context.Context, cls clients, repl *replicate.Replicator,
	topics []topicsync.Topic, ends kadm.ListedOffsets, loaded progress.Loaded, firstStart bool) ([]replicate.Assignment, error) {
	names := make([]string, len(topics))
	targetNames := make([]string, len(topics))
	for i, t := range topics {
		names[i], targetNames[i] = t.Source, t.Target
	}
	starts, err := cls.srcAdmin.ListStartOffsets(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("listing source start offsets: %w", err)
	}
	tgtEnds, err := cls.tgtAdmin.ListEndOffsets(ctx, targetNames...)
	if err != nil {
		return nil, fmt.Errorf("listing target end offsets: %w", err)
	}
	var as []replicate.Assignment
	type resumed struct {
		i                      int
		pos                    progress.Position
		sourceStart, sourceEnd int64
	}
	var toResume []resumed
	for _, t := range topics {
		for p := int32(0); p < t.Partitions; p++ {
			if repl.Has(t.Source, p) {
				continue
			}
			id := progress.Partition{Topic: t.Source, Partition: p}
			start, ok := starts.Lookup(t.Source, p)
			end, ok2 := ends.Lookup(t.Source, p)
			if !ok || !ok2 || start.Err != nil || end.Err != nil {
				return nil, fmt.Errorf("no offsets for source partition %s: %w", id, errors.Join(start.Err, end.Err))
			}
			a := replicate.Assignment{Source: id, TargetTopic: t.Target, Runs: loaded.Runs[id]}
			if pos, ok := loaded.Positions[id]; ok {
				toResume = append(toResume, resumed{len(as), pos, start.Offset, end.Offset})
			} else if firstStart && f.cfg.StartFrom == "latest" {
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
	for _, r := range toResume {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			a := &as[r.i]
			omap := offsets.NewMap(a.Runs)
			a.Start = f.resume(ctx, cls, a.Source, a.TargetTopic, r.pos, r.sourceStart, r.sourceEnd, tgtEnds, omap)
			a.Runs = omap.Runs()
		}()
	}
	wg.Wait()
	return as, nil
}

// resumeConcurrency bounds the partitions whose resume points are checked
// at once.
const resumeConcurrency = 16

// resume checks a stored position against both clusters and returns the
// position to start from. It reports records the source deleted before
// they were copied. Records the target holds past the stored position were
// written by the previous run after its last progress write: those whose
// key, value, headers and timestamp match the next source records, in
// order, are skipped rather than written again; the rest are counted as
// duplicates.
func (f *Flow) resume(ctx context.Context, cls clients, id progress.Partition, target string, pos progress.Position,
	sourceStart, sourceEnd int64, tgtEnds kadm.ListedOffsets, omap *offsets.Map) progress.Position {
	if pos.SourceNext < sourceStart {
		lost := sourceStart - pos.SourceNext
		f.metrics.Errors.WithLabelValues(f.cfg.Name, metrics.ErrOffsetReset).Inc()
		f.logger.Error("source deleted records before they were replicated (retention); resuming at the source's earliest offset",
			"topic", id.Topic, "partition", id.Partition, "position", pos.SourceNext, "source_start", sourceStart, "records_lost_at_most", lost)
		return pos
	}
	te, ok := tgtEnds.Lookup(target, id.Partition)
	if !ok || te.Err != nil || pos.TargetNext < 0 || te.Offset <= pos.TargetNext {
		return pos
	}
	ahead := te.Offset - pos.TargetNext
	pairs, next, err := resume.Match(ctx, cls.src, cls.tgt, id, target, pos, te.Offset, sourceEnd)
	matched := int64(len(pairs))
	now := time.Now().UnixMilli()
	for _, p := range pairs {
		omap.Add(p.Source, p.Target, now)
	}
	if err != nil {
		f.logger.Warn("could not compare the target's records past the stored position; they will be written again",
			"topic", id.Topic, "partition", id.Partition, "err", err)
	}
	if dups := ahead - matched; dups > 0 {
		f.metrics.Duplicates.WithLabelValues(f.cfg.Name, id.Topic).Add(float64(dups))
		f.logger.Info("target holds records written after the last stored position; they will be written again",
			"topic", id.Topic, "partition", id.Partition, "duplicates", dups)
	}
	if matched > 0 {
		f.metrics.ResumeSkipped.WithLabelValues(f.cfg.Name, id.Topic).Add(float64(matched))
		f.logger.Info("resumed past records the target already holds",
			"topic", id.Topic, "partition", id.Partition, "skipped", matched, "from", pos.SourceNext, "to", next.SourceNext)
		return next
	}
	return pos
}

// syncGroups checkpoints and commits consumer group offsets every
// sync_interval.
func (f *Flow) syncGroups(ctx context.Context, lv *live) {
	lastSynced := map[string]time.Time{}
	groupErrs := map[string]string{}
	var errLogged time.Time
	t := time.NewTicker(f.cfg.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rep, err := lv.syncGroups(ctx, f.cfg.ReplicationFactor)
		if err != nil {
			f.groupSyncFailed(ctx, &errLogged, err)
			continue
		}
		now := time.Now()
		synced := 0
		for _, g := range rep.Groups {
			if g.Err != nil {
				f.metrics.Errors.WithLabelValues(f.cfg.Name, metrics.ErrGroupSync).Inc()
				if groupErrs[g.Group] != g.Err.Error() {
					groupErrs[g.Group] = g.Err.Error()
					f.logger.Error("group offset sync failed; retrying", "group", g.Group, "err", g.Err)
				}
				continue
			}
			delete(groupErrs, g.Group)
			if len(g.Checkpoints) > 0 {
				synced++
				lastSynced[g.Group] = now
			}
			if g.Committed > 0 {
				f.metrics.GroupCommits.WithLabelValues(f.cfg.Name).Add(float64(g.Committed))
			}
		}
		f.metrics.GroupsSynced.WithLabelValues(f.cfg.Name).Set(float64(synced))
		for g, at := range lastSynced {
			f.metrics.CheckpointAge.WithLabelValues(f.cfg.Name, g).Set(now.Sub(at).Seconds())
		}
	}
}

// syncGroups runs one group sync pass, creating and reading the checkpoint
// topic first if needed.
func (lv *live) syncGroups(ctx context.Context, replicationFactor int) (groupsync.Report, error) {
	lv.groupMu.Lock()
	defer lv.groupMu.Unlock()
	if !lv.seeded {
		if err := lv.store.Ensure(ctx, replicationFactor); err != nil {
			return groupsync.Report{}, err
		}
		cps, err := lv.store.Load(ctx)
		if err != nil {
			return groupsync.Report{}, err
		}
		lv.groups.Seed(cps)
		lv.seeded = true
	}
	return lv.groups.Sync(ctx)
}

// SyncGroupsNow runs one group sync pass of the running flow, as a planned
// failover does after the last record was copied.
func (f *Flow) SyncGroupsNow(ctx context.Context) (groupsync.Report, error) {
	lv := f.live.Load()
	if lv == nil || !f.started.Load() {
		return groupsync.Report{}, errors.New("the flow is not running")
	}
	return lv.syncGroups(ctx, f.cfg.ReplicationFactor)
}

// Translate maps a source offset with the running flow's offset map; false
// if the flow is not running or does not replicate the partition.
func (f *Flow) Translate(topic string, partition int32, src int64) (offsets.Result, bool) {
	repl := f.repl.Load()
	if repl == nil {
		return offsets.Result{}, false
	}
	return repl.Translate(topic, partition, src)
}

// PartitionLag is how far one source partition is behind.
type PartitionLag struct {
	Topic      string `json:"topic"`
	Partition  int32  `json:"partition"`
	SourceEnd  int64  `json:"source_end"`
	SourceNext int64  `json:"source_next"`
	Lag        int64  `json:"lag"`
}

// Lag compares the running flow's positions with the source's end offsets
// now, for every partition of the topics the flow replicates. Transaction
// markers count as copied once the records before them are.
func (f *Flow) Lag(ctx context.Context) ([]PartitionLag, error) {
	lv, repl, topics := f.live.Load(), f.repl.Load(), f.topics.Load()
	if lv == nil || repl == nil || topics == nil || !f.started.Load() {
		return nil, errors.New("the flow is not running yet")
	}
	names := make([]string, len(*topics))
	for i, t := range *topics {
		names[i] = t.Source
	}
	ends, err := kadm.NewClient(lv.src).ListEndOffsets(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("listing source end offsets: %w", err)
	}
	if err := ends.Error(); err != nil {
		return nil, fmt.Errorf("listing source end offsets: %w", err)
	}
	positions := repl.Positions()
	var out []PartitionLag
	ends.Each(func(o kadm.ListedOffset) {
		pl := PartitionLag{Topic: o.Topic, Partition: o.Partition, SourceEnd: o.Offset, SourceNext: -1, Lag: o.Offset}
		if pos, ok := positions[progress.Partition{Topic: o.Topic, Partition: o.Partition}]; ok {
			pl.SourceNext = pos.SourceNext
			pl.Lag = max(o.Offset-pos.SourceNext, 0)
		}
		out = append(out, pl)
	})
	slices.SortFunc(out, func(a, b PartitionLag) int {
		if c := strings.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		return int(a.Partition - b.Partition)
	})
	return out, nil
}

func (f *Flow) groupSyncFailed(ctx context.Context, logged *time.Time, err error) {
	if ctx.Err() != nil {
		return
	}
	f.metrics.Errors.WithLabelValues(f.cfg.Name, metrics.ErrGroupSync).Inc()
	if time.Since(*logged) > 30*time.Second {
		*logged = time.Now()
		f.logger.Error("group offset sync failed; retrying", "err", err)
	}
}

func retryDelay(attempt int) time.Duration {
	d := time.Second << min(attempt-1, 5)
	return min(d, 30*time.Second)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
