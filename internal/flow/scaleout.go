package flow

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/groupsync"
	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/ownership"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/replicate"
	"github.com/kmirror/kmirror/internal/retry"
	"github.com/kmirror/kmirror/internal/topicsync"
)

// releaseWait bounds how long a revoked partition's writes in flight and
// final position store may take; the member's own bound (half the
// ownership timeout) ends its lease past it.
func (f *Flow) releaseWait() time.Duration { return f.cfg.OwnershipTimeout / 3 }

// runMember is runOwned under scale-out (scale_out: true): this instance
// replicates the partitions the ownership group assigns it, and, while it
// is the elected member, runs the flow-wide work (topic, config, ACL and
// group sync, heartbeats, the status record). It returns when ctx ends,
// after its writes in flight were acknowledged and its positions stored.
func (f *Flow) runMember(ctx context.Context, lease *ownership.Lease, member *ownership.Member) error {
	cls, err := f.dial(lease)
	if err != nil {
		return err
	}
	defer cls.close()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	store := f.progressStore(cls.meta)
	loaded, err := f.setup(ctx, store, cls, member)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("flow %q: %w", f.cfg.Name, err)
	}
	prov, ok := f.startProvenance(ctx, &wg, cls.src, cls.tgt)
	if !ok {
		return nil
	}
	opts := f.replOptions(cls, lease, store, prov)
	fw, stopForward := f.forwarding(ctx, cls)
	defer stopForward() // after Run returned
	opts.Forward = fw
	repl := replicate.New(opts)
	f.repl.Store(repl)
	own := &ownedSet{set: map[progress.Partition]bool{}}
	r := &run{
		Flow: f,
		src:  cls.src, tgt: cls.tgt, meta: cls.meta,
		srcAdmin: kadm.NewClient(cls.src), tgtAdmin: kadm.NewClient(cls.tgt),
		naming: policy.NewTopics(f.cfg).WithGraph(f.graph, f.cfg),
		store:  store, repl: repl, loaded: loaded,
		targetIDs: map[string]string{}, stuckTopics: map[string]bool{},
		owns: own.has, member: member,
	}
	f.started.Store(true)
	defer f.started.Store(false)
	defer f.stuck.Store(nil)
	replDone := make(chan error, 1)
	go func() { replDone <- repl.Run(ctx) }()
	f.logger.Info("flow started as a scale-out member", "source", f.cfg.Source, "target", f.cfg.Target,
		"progress_topic", store.Topic())

	var stopElected func()
	defer func() {
		if stopElected != nil {
			stopElected()
		}
	}()
	errLog := retry.Throttle{Every: 30 * time.Second}
	t := time.NewTicker(f.cfg.TopicRefreshInterval)
	defer t.Stop()
	for ctx.Err() == nil {
		changed := member.Changed()
		sh := member.Share()
		switch {
		case sh.Elected && stopElected == nil:
			stopElected = r.startElected(ctx, member)
		case !sh.Elected && stopElected != nil:
			stopElected()
			stopElected = nil
		}
		if len(sh.Revoking) > 0 {
			if r.release(ctx, lease, own, sh.Revoking) {
				member.Released()
			}
			// Otherwise the lease ended: the member hands the partitions
			// over when it sees it, and this run stops.
		} else {
			own.replace(sh.Owned)
			if err := r.addOwned(ctx, own); err != nil && ctx.Err() == nil && errLog.Allow() {
				f.logger.Warn("cannot start replicating assigned partitions yet; retrying", "err", err)
			}
			r.resetOwnedRecreated(ctx, own)
			r.refreshOwnedLag(ctx, own)
		}
		select {
		case <-ctx.Done():
		case <-changed:
		case <-t.C:
		case <-repl.AgainReady():
			// A partition to compare with the target again.
		case err := <-replDone:
			// The data plane stopped on its own: an exactly-once
			// transaction was aborted.
			replDone <- err
			cancel()
		}
	}
	if stopElected != nil {
		stopElected()
		stopElected = nil
	}
	if err := <-replDone; errors.Is(err, replicate.ErrTransactionAborted) {
		f.logger.Info("flow stopped", "replicated_records", repl.Totals().Records)
		return err
	} else if err != nil {
		// Writes still unanswered: nothing more may leave the process
		// (the client would keep retrying them) before the group hands
		// the partitions over.
		lease.End()
		f.logger.Warn("flow stopped with writes unconfirmed; the next owner of its partitions checks them", "err", err)
	}
	f.logger.Info("flow stopped", "replicated_records", repl.Totals().Records)
	return nil
}

// replOptions are the data plane's options for the clients of one run.
func (f *Flow) replOptions(cls *runClients, lease *ownership.Lease, store *progress.Store, prov *replicate.Provenance) replicate.Options {
	var txns *replicate.Transactions
	if f.cfg.ExactlyOnce {
		// Positions are written in the transactions of the records they
		// cover, with the transactional producer.
		store = store.WithClient(cls.tgt)
		txns = &replicate.Transactions{
			ID:    f.transactionalID(),
			Group: policy.OwnershipGroup(f.cfg),
			Member: func() (string, int32, bool) {
				id, gen := lease.Member()
				return id, gen, lease.Allow() == nil
			},
			Interval: f.cfg.TransactionInterval,
			MaxBytes: f.cfg.TransactionMaxBytes,
		}
	}
	return replicate.Options{
		Transactions:         txns,
		Flow:                 f.cfg.Name,
		Source:               cls.src,
		Target:               cls.tgt,
		Progress:             store,
		ProgressInterval:     f.cfg.ProgressInterval,
		OffsetMapRetention:   f.cfg.OffsetMapRetention,
		OffsetMapMaxRuns:     f.cfg.OffsetMapMaxRuns,
		DeadLetterTopic:      f.cfg.DeadLetterTopic,
		RefusedRetryInterval: f.cfg.RefusedRetryInterval,
		SourceAccess:         kafka.AccessOf(f.source),
		TargetAccess:         kafka.AccessOf(f.target),
		Provenance:           prov,
		Metrics:              f.metrics,
		Logger:               f.logger,
	}
}

// ownedSet is the partitions this instance owns, read by the resume code.
type ownedSet struct {
	mu  sync.Mutex
	set map[progress.Partition]bool
}

func (o *ownedSet) has(id progress.Partition) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.set[id]
}

func (o *ownedSet) replace(ps []ownership.Partition) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.set = make(map[progress.Partition]bool, len(ps))
	for _, p := range ps {
		o.set[progress.Partition{Topic: p.Topic, Partition: p.Partition}] = true
	}
}

func (o *ownedSet) list() []progress.Partition {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]progress.Partition, 0, len(o.set))
	for id := range o.set {
		out = append(out, id)
	}
	return out
}

func (o *ownedSet) remove(ps []ownership.Partition) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range ps {
		delete(o.set, progress.Partition{Topic: p.Topic, Partition: p.Partition})
	}
}

// release stops revoked partitions, waits for their writes in flight and
// stores their final positions, within releaseWait, and reports whether
// they may be handed over. If their writes did not drain, a write of
// theirs may still reach the target after a new owner started writing:
// it ends the lease, so that nothing more of this process is written (the
// client would retry the unanswered writes), fails their buffered records
// and waits, until just before the member's own bound (half the ownership
// timeout), for the target to answer the writes it was sent; it reports
// false then, and the member hands them over once it sees the lease ended.
// If only their final positions could not be stored, it ends the lease
// too (their next owner fences this run's producer on them) and reports
// false.
func (r *run) release(ctx context.Context, lease *ownership.Lease, own *ownedSet, ps []ownership.Partition) bool {
	own.remove(ps)
	ids := make([]progress.Partition, len(ps))
	for i, p := range ps {
		ids[i] = progress.Partition{Topic: p.Topic, Partition: p.Partition}
	}
	start := time.Now()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.releaseWait())
	err := r.repl.Release(rctx, ids)
	cancel()
	switch {
	case errors.Is(err, replicate.ErrNotDrained):
		lease.End()
		r.logger.Warn("revoked partitions have writes the target did not answer; this instance gives up its lease and stops writing",
			"partitions", len(ids), "waited", r.releaseWait().String(), "err", err)
		actx, cancel := context.WithDeadline(context.WithoutCancel(ctx), start.Add(r.cfg.OwnershipTimeout/2-r.cfg.OwnershipTimeout/20))
		defer cancel()
		if err := r.repl.Abandon(actx, ids); err != nil {
			r.logger.Warn("revoked partitions handed over with writes unanswered; their next owner waits for the target to settle",
				"partitions", len(ids), "err", err)
		}
		return false
	case err != nil:
		// Every write was answered; only the store failed. Their next
		// owner compares the target, and fences this run's producer on
		// them (they are not stored Stopped): it must not write them
		// again. The lease ends, and with it this run and its producer.
		lease.End()
		r.logger.Warn("revoked partitions released without their final position stored; this instance gives up its lease, their next owner compares the target",
			"partitions", len(ids), "err", err)
		return false
	}
	r.logger.Info("revoked partitions stopped and their positions stored; handing them over",
		"partitions", len(ids), "took", time.Since(start).Round(time.Millisecond).String())
	return true
}

// addOwned starts replicating the owned partitions the data plane does not
// have yet, from their stored positions (another instance may have written
// them until just now), checked against the target as after a restart.
func (r *run) addOwned(ctx context.Context, own *ownedSet) error {
	var want []progress.Partition
	for _, id := range own.list() {
		if !r.repl.Has(id.Topic, id.Partition) {
			want = append(want, id)
		}
	}
	if len(want) == 0 {
		return nil
	}
	lctx, cancel := context.WithTimeout(ctx, r.target.RequestTimeout+30*time.Second)
	if r.cfg.ExactlyOnce {
		// Their previous owner's last transaction ends first; if it is
		// gone, it is aborted now rather than at its timeout.
		r.abortOrphanTransactions(lctx, r.tgt, r.liveTransactionalIDs(r.member))
	}
	loaded, err := r.store.Load(lctx)
	cancel()
	if err != nil {
		return fmt.Errorf("reading the stored positions of %d assigned partitions: %w", len(want), err)
	}
	r.loaded = loaded
	// Partitions the data plane took out to be compared with the target
	// again start from their positions as it left them.
	r.remember(r.repl.ResumeAgain())
	settle := false
	for _, id := range want {
		// A partition its last owner stopped cleanly has no write of it
		// still on its way.
		if pos, ok := loaded.Positions[id]; ok && pos.TargetNext >= 0 && !pos.Stopped {
			settle = true
		}
	}
	names := topicNames(want)
	topics, err := r.describeTopics(ctx, names)
	if err != nil {
		return err
	}
	if len(topics) == 0 {
		return fmt.Errorf("assigned topics %v are not on both clusters yet", names)
	}
	// A target topic that grew: its new partitions are assigned as soon
	// as the elected instance's topic sync grew it, before this
	// instance's producer may see them.
	stuck := newStuckSet()
	if topics = r.producerReady(ctx, topics, stuck); len(topics) == 0 {
		return fmt.Errorf("the target producer does not see the new partitions of the copies of %v yet", names)
	}
	if settle && !r.cfg.ExactlyOnce {
		// The previous owner may have died with writes on their way: the
		// resume comparison must see them. (Exactly-once: its writes past
		// its last commit are aborted, or fail, fenced by the brokers.)
		if err := r.settle(ctx, want); err != nil {
			return err
		}
	}
	ends := r.listOffsets(ctx, r.srcAdmin.ListEndOffsets, names)
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			r.repl.SetHighWatermark(o.Topic, o.Partition, o.Offset)
		}
	})
	as := r.assignments(ctx, topics, ends, !loaded.Started, stuck)
	r.repl.Add(as)
	for _, a := range as {
		r.repl.SetHighWatermark(a.Source.Topic, a.Source.Partition, endOf(ends, a.Source))
	}
	if len(as) > 0 {
		r.logger.Info("replicating assigned partitions", "added", len(as))
	}
	return nil
}

// topicNames are the topics of ids, each once.
func topicNames(ids []progress.Partition) []string {
	seen := map[string]bool{}
	var names []string
	for _, id := range ids {
		if !seen[id.Topic] {
			seen[id.Topic] = true
			names = append(names, id.Topic)
		}
	}
	return names
}

// describeTopics reads source topics and their target topics: partition
// counts and topic IDs. A topic not on both clusters is left out (the
// elected instance's topic sync creates the target topic).
func (r *run) describeTopics(ctx context.Context, names []string) ([]topicsync.Topic, error) {
	targetNames := make([]string, len(names))
	for i, name := range names {
		targetNames[i] = r.naming.TargetName(name)
	}
	srcMeta, err := r.srcAdmin.Metadata(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("reading source topics: %w", err)
	}
	tgtMeta, err := r.tgtAdmin.Metadata(ctx, targetNames...)
	if err != nil {
		return nil, fmt.Errorf("reading target topics: %w", err)
	}
	r.learnMaxMessage(ctx, targetNames)
	var topics []topicsync.Topic
	for i, name := range names {
		st, ok := srcMeta.Topics[name]
		tt, ok2 := tgtMeta.Topics[targetNames[i]]
		if !ok || !ok2 || st.Err != nil || tt.Err != nil {
			continue
		}
		topics = append(topics, topicsync.Topic{
			Source: name, Target: targetNames[i],
			Partitions: int32(min(len(st.Partitions), len(tt.Partitions))),
			SourceID:   topicsync.TopicID(st.ID), TargetID: topicsync.TopicID(tt.ID),
		})
	}
	return topics, nil
}

// resetOwnedRecreated finds the topics this instance replicates that were
// deleted and created again on either cluster (their topic ID changed),
// stops them and resets what is stored of their partitions it owns, as the
// whole-flow topic sync does; addOwned adds them again at the next turn of
// the member loop, from the new topic's beginning.
func (r *run) resetOwnedRecreated(ctx context.Context, own *ownedSet) {
	var mine []progress.Partition
	for _, id := range own.list() {
		if r.repl.Has(id.Topic, id.Partition) {
			mine = append(mine, id)
		}
	}
	if len(mine) == 0 {
		return
	}
	topics, err := r.describeTopics(ctx, topicNames(mine))
	if err != nil {
		return // retried at the next turn
	}
	stuck := newStuckSet()
	r.resetRecreated(ctx, topics, stuck)
	for topic, st := range stuck.byTopic {
		r.logger.Warn("cannot reset a re-created topic yet; retrying", "topic", topic, "err", st.Reason)
	}
}

func endOf(ends kadm.ListedOffsets, id progress.Partition) int64 {
	if o, ok := ends.Lookup(id.Topic, id.Partition); ok && o.Err == nil {
		return o.Offset
	}
	return -1
}

// settle waits until the target partitions of ids stop growing (bounded);
// other partitions of their topics are written by other instances. It
// fails closed: ends it cannot list do not count as settled, and an error
// leaves the partitions for a later turn. Records a write of the previous
// owner appended to the leader's log but that wait for acks=all
// (purgatory) are not under the high watermark yet: the leader's log end
// must equal it too. A target that does not list its log end is given
// the producer's request timeout instead, during which the ends must not
// move.
func (r *run) settle(ctx context.Context, ids []progress.Partition) error {
	const quiet = time.Second
	seen := map[string]bool{}
	var names []string
	for _, id := range ids {
		if t := r.naming.TargetName(id.Topic); !seen[t] {
			seen[t] = true
			names = append(names, t)
		}
	}
	began := time.Now()
	limit := settleLimit
	var last map[progress.Partition]int64
	var why string
	settled := retry.Until(ctx, quiet, limit, func() bool {
		lctx, cancel := context.WithTimeout(ctx, offsetsTimeout)
		defer cancel()
		ends, err := r.tgtAdmin.ListEndOffsets(lctx, names...)
		if err != nil {
			last, why = nil, "listing the target's end offsets: "+err.Error()
			return false
		}
		logEnds, logErr := listLogEnds(lctx, r.tgt, names)
		now := make(map[progress.Partition]int64, len(ids))
		for _, id := range ids {
			o, ok := ends.Lookup(r.naming.TargetName(id.Topic), id.Partition)
			if !ok || o.Err != nil {
				last, why = nil, fmt.Sprintf("end offset of %s/%d not listed", r.naming.TargetName(id.Topic), id.Partition)
				return false
			}
			if logErr == nil {
				if leo, ok := logEnds[progress.Partition{Topic: r.naming.TargetName(id.Topic), Partition: id.Partition}]; ok && leo > o.Offset {
					last, why = nil, fmt.Sprintf("%s/%d has records waiting for acknowledgement by all replicas", r.naming.TargetName(id.Topic), id.Partition)
					return false
				}
			}
			now[id] = o.Offset
		}
		same := last != nil && maps.Equal(last, now)
		last = now
		if !same {
			why = "target partitions still growing"
			return false
		}
		if logErr != nil && time.Since(began) < purgatoryWait {
			why = "waiting out the producer's request timeout (the target does not list its log end: " + logErr.Error() + ")"
			return false
		}
		return true
	})
	if !settled && ctx.Err() == nil {
		return fmt.Errorf("target partitions taken over did not settle within %s: %s", limit, why)
	}
	return ctx.Err()
}

// settleLimit bounds one settle; purgatoryWait is franz-go's default
// produce request timeout, which the flow's producers use: how long the
// target may hold a write for acks=all before answering it.
const (
	settleLimit   = 20 * time.Second
	purgatoryWait = 10 * time.Second
)

// listLogEnds lists the leader's log end offset of every partition of
// topics (ListOffsets as a debugging replica: not capped at the high
// watermark), keyed by target topic and partition.
func listLogEnds(ctx context.Context, cl *kgo.Client, topics []string) (map[progress.Partition]int64, error) {
	meta, err := kadm.NewClient(cl).Metadata(ctx, topics...)
	if err != nil {
		return nil, err
	}
	req := kmsg.NewPtrListOffsetsRequest()
	req.ReplicaID = -2
	for _, name := range topics {
		mt, ok := meta.Topics[name]
		if !ok || mt.Err != nil {
			return nil, fmt.Errorf("topic %s not described", name)
		}
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = name
		for p := range mt.Partitions {
			rp := kmsg.NewListOffsetsRequestTopicPartition()
			rp.Partition, rp.Timestamp, rp.CurrentLeaderEpoch = p, -1, -1
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, err
	}
	out := map[progress.Partition]int64{}
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
				return nil, fmt.Errorf("%s/%d: %w", rt.Topic, rp.Partition, err)
			}
			out[progress.Partition{Topic: rt.Topic, Partition: rp.Partition}] = rp.Offset
		}
	}
	return out, nil
}

// refreshOwnedLag updates the source end offsets of the owned partitions
// and kmirror_lag_owned_records.
func (r *run) refreshOwnedLag(ctx context.Context, own *ownedSet) {
	if names := topicNames(own.list()); len(names) > 0 {
		ends := r.listOffsets(ctx, r.srcAdmin.ListEndOffsets, names)
		ends.Each(func(o kadm.ListedOffset) {
			if o.Err == nil {
				r.repl.SetHighWatermark(o.Topic, o.Partition, o.Offset)
			}
		})
	}
	r.metrics.LagOwned.WithLabelValues(r.cfg.Name).Set(float64(r.repl.Totals().Lag))
}

// allStored reports whether the flow may be marked started: always without
// scale-out; with it, once every partition of the topics ready has a stored
// position (its owner stored where it starts), so that start_from applies
// to every partition present at the flow's first start.
func (r *run) allStored(ctx context.Context) bool {
	if r.universe == nil {
		return true
	}
	topics := r.topics.Load()
	if topics == nil {
		return false
	}
	loaded, err := r.store.Load(ctx)
	if err != nil {
		return false
	}
	for _, t := range *topics {
		for p := range t.Partitions {
			if _, ok := loaded.Positions[progress.Partition{Topic: t.Source, Partition: p}]; !ok {
				return false
			}
		}
	}
	return true
}

// startElected starts the flow-wide work of the elected member and returns
// the function that stops it.
func (r *run) startElected(ctx context.Context, member *ownership.Member) func() {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// The elected work has its own copy of the run's maps: the member loop
	// owns the others.
	er := *r
	er.loaded = progress.Loaded{Positions: map[progress.Partition]progress.Position{}, Runs: map[progress.Partition][]offsets.Run{}}
	for id, p := range r.loaded.Positions {
		er.loaded.Positions[id] = p
	}
	er.loaded.Started = r.loaded.Started
	er.targetIDs, er.stuckTopics = map[string]string{}, map[string]bool{}
	er.owns = func(progress.Partition) bool { return false }
	er.universe = func(ready []topicsync.Topic) {
		var ps []ownership.Partition
		for _, t := range ready {
			for p := range t.Partitions {
				ps = append(ps, ownership.Partition{Topic: t.Source, Partition: p})
			}
		}
		member.SetUniverse(ps)
	}
	tr := &storedTranslator{repl: r.repl, store: r.store, every: r.cfg.SyncInterval}
	lv := &live{src: r.src, store: groupsync.NewStore(r.meta, policy.CheckpointTopic(r.cfg.Name)).WithAccess(kafka.AccessOf(r.target))}
	lv.groups = groupsync.New(groupsync.Options{
		Source: r.srcAdmin, Target: kadm.NewClient(r.meta),
		Include: r.cfg.GroupsRegexps, Exclude: r.cfg.GroupsExcludeRegexps,
		TargetName: r.naming.TargetName,
		TopicID: func(topic string) string {
			if id, ok := r.repl.TopicID(topic); ok {
				return id
			}
			return tr.topicID(topic)
		},
		Translator: tr, Store: lv.store, Logger: r.logger,
		Own: ownRuns(r.repl, tr), Peers: groupsync.NewPeers(r.conf, r.cfg, r.src, r.meta),
	})
	r.live.Store(lv)
	run := func(fn func(context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(ctx)
		}()
	}
	run(er.syncTopics)
	if r.cfg.SyncGroupOffsets {
		run(func(ctx context.Context) { r.syncGroups(ctx, lv) })
	}
	if r.cfg.ACLs != config.ACLsOff {
		run(er.syncACLs)
	}
	if r.cfg.HeartbeatInterval > 0 {
		run(er.heartbeats)
	}
	if r.cfg.VerifyInterval > 0 {
		run(er.verifyLoop)
	}
	run(er.publishStatus)
	return func() {
		cancel()
		wg.Wait()
		r.live.Store(nil)
		r.topics.Store(nil)
	}
}

// storedTranslator translates committed offsets of partitions this
// instance replicates with the data plane's offset map, and those of
// other instances with their maps as stored in the progress topic (read
// again at most every sync interval).
type storedTranslator struct {
	repl  *replicate.Replicator
	store *progress.Store
	every time.Duration

	mu       sync.Mutex
	loadedAt time.Time
	loaded   progress.Loaded
}

func (s *storedTranslator) refresh() progress.Loaded {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.loadedAt) >= s.every/2 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if l, err := s.store.Load(ctx); err == nil {
			s.loaded, s.loadedAt = l, time.Now()
		}
		cancel()
	}
	return s.loaded
}

// Translate implements groupsync.Translator.
func (s *storedTranslator) Translate(topic string, partition int32, src int64) (offsets.Result, bool) {
	if res, ok := s.repl.Translate(topic, partition, src); ok {
		return res, true
	}
	l := s.refresh()
	id := progress.Partition{Topic: topic, Partition: partition}
	pos, ok := l.Positions[id]
	if !ok {
		return offsets.Result{}, false
	}
	if pos.TargetNext < 0 {
		return offsets.Result{Target: 0, Exact: false}, true
	}
	m := offsets.NewMap(l.Runs[id])
	m.Advance(pos.SourceNext)
	return m.Translate(src, pos.TargetNext), true
}

func (s *storedTranslator) topicID(topic string) string {
	l := s.refresh()
	for id, pos := range l.Positions {
		if id.Topic == topic {
			return pos.TopicID
		}
	}
	return ""
}
