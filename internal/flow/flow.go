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
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/groupsync"
	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/membudget"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/ownership"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/replicate"
	"github.com/kmirror/kmirror/internal/retry"
	"github.com/kmirror/kmirror/internal/topicsync"
	"github.com/kmirror/kmirror/internal/topology"
)

// Flow replicates the topics of one source cluster into one target cluster.
type Flow struct {
	cfg            *config.Flow
	source, target *config.Cluster
	peers          map[string]*config.Cluster // every cluster of the configuration
	// graph is every flow of the configuration, for loop checks and
	// routes in meshes.
	graph *topology.Graph
	// conf is the whole configuration, for the group sync's peers.
	conf    *config.Config
	metrics *metrics.Metrics
	logger  *slog.Logger

	sourceUp, targetUp atomic.Bool
	// sourceErr and targetErr say why a cluster is down: the last
	// health check's error, nil while it answers.
	sourceErr, targetErr atomic.Pointer[string]
	started              atomic.Bool // setup done, data plane running
	repl                 atomic.Pointer[replicate.Replicator]
	topics               atomic.Pointer[[]topicsync.Topic]
	stuck                atomic.Pointer[[]Stuck]
	live                 atomic.Pointer[live]
	owner                atomic.Pointer[ownership.State]
	created              time.Time
	// healthKind holds, by cluster alias, the kind of its last failed
	// health check, so that a failure is logged again only when its kind
	// changes.
	healthKind sync.Map
	api        apiState // what Status keeps between calls
	// siblings are the flows running in the same process, by name (see
	// Siblings); set before they start, read-only after.
	siblings map[string]*Flow
	// maxMessage holds, by target topic, the max.message.bytes topic sync
	// set or found there (int32): the producer lets a record that large
	// through (see producerOpts).
	maxMessage sync.Map
	// mem are the flow's client sizes (see SetMemory), and compares
	// bounds the partitions compared with the target at once at restart
	// (nil: only the caller's bound).
	mem      membudget.Flow
	compares chan struct{}
}

// Siblings tells each of flows, before they start, about the others
// running in the same process: a flow with provenance proves the marks of
// a sibling that writes into its source from the sibling's offset map in
// memory, as soon as the sibling's write is acknowledged, instead of
// waiting for the sibling to store its progress.
func Siblings(flows []*Flow) {
	byName := make(map[string]*Flow, len(flows))
	for _, f := range flows {
		byName[f.cfg.Name] = f
	}
	for _, f := range flows {
		f.siblings = byName
	}
}

// New returns the flow fc of configuration cfg.
func New(cfg *config.Config, fc *config.Flow, m *metrics.Metrics, logger *slog.Logger) *Flow {
	return &Flow{
		cfg:     fc,
		source:  cfg.Clusters[fc.Source],
		target:  cfg.Clusters[fc.Target],
		peers:   cfg.Clusters,
		graph:   cfg.Topology(),
		conf:    cfg,
		metrics: m,
		logger:  logger.With("flow", fc.Name),
		created: time.Now(),
		mem:     membudget.Unbounded(fc),
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
// at its last check. A stuck topic (see Stuck) does not make a flow
// unready while it replicates the others; it is reported by StuckTopics.
func (f *Flow) Ready() bool {
	return f.started.Load() && f.sourceUp.Load() && f.targetUp.Load()
}

// Status is a snapshot of the flow for the API and the demo.
type Status struct {
	Name     string `json:"name"`
	Source   string `json:"source"`
	Target   string `json:"target"`
	Ready    bool   `json:"ready"`
	SourceUp bool   `json:"source_up"`
	TargetUp bool   `json:"target_up"`
	// SourceError and TargetError say why a cluster is down, in one line
	// (authentication, TLS, authorization or no answer).
	SourceError string `json:"source_error,omitempty"`
	TargetError string `json:"target_error,omitempty"`
	// Topics are the replicated topics, each with its recovery point.
	Topics []TopicStatus `json:"topics"`
	// RecoveryPoint is what the target would miss if the source died now
	// (see RecoveryPoint); null while the flow does not replicate here.
	RecoveryPoint *RecoveryPoint `json:"recovery_point"`
	// Stuck are the topics, or partitions of topics, the flow cannot
	// replicate for now.
	Stuck  []Stuck          `json:"stuck,omitempty"`
	Totals replicate.Totals `json:"totals"`
	// Owner says whether this process holds the flow, and who does.
	Owner *ownership.State `json:"owner,omitempty"`
	// Read from the metrics (see apiextras.go): errors by kind since the
	// start, records not yet copied by source topic, the age of the
	// youngest group checkpoint, and the latency over the last minute.
	Errors              map[string]int64 `json:"errors,omitempty"`
	LagByTopic          map[string]int64 `json:"lag_by_topic,omitempty"`
	GroupSyncAgeSeconds *float64         `json:"group_sync_age_seconds,omitempty"`
	LatencyMs           *LatencyMs       `json:"latency_ms,omitempty"`
}

// StuckTopics returns the topics, or partitions of topics, that the last
// topic sync pass could not replicate.
func (f *Flow) StuckTopics() []Stuck {
	if s := f.stuck.Load(); s != nil {
		return *s
	}
	return nil
}

// Status returns a snapshot of the flow.
func (f *Flow) Status() Status {
	s := Status{
		Name: f.cfg.Name, Source: f.cfg.Source, Target: f.cfg.Target,
		Ready: f.Ready(), SourceUp: f.sourceUp.Load(), TargetUp: f.targetUp.Load(),
	}
	if e := f.sourceErr.Load(); e != nil {
		s.SourceError = *e
	}
	if e := f.targetErr.Load(); e != nil {
		s.TargetError = *e
	}
	s.Topics, s.RecoveryPoint = f.topicStatuses(f.topics.Load(), time.Now())
	s.Stuck = f.StuckTopics()
	if r := f.repl.Load(); r != nil {
		s.Totals = r.Totals()
	}
	s.Owner = f.owner.Load()
	f.addExtras(&s, time.Now())
	return s
}

// Run replicates until ctx is done. Faults of either cluster are retried
// with backoff; Run returns only when ctx ends.
//
// One process at a time replicates a flow: Run first waits until this
// process holds the flow (package ownership), and stops writing as soon
// as it no longer does; then it waits to hold it again.
func (f *Flow) Run(ctx context.Context) error {
	ownClient, err := kafka.NewClient(f.target, f.logger)
	if err != nil {
		return err
	}
	defer ownClient.Close()
	// Health is watched for the flow's whole life, also while it waits
	// to hold the flow, so that /readyz, the log and the metrics say why
	// a cluster cannot be used (a refused password, a rotated
	// certificate, ...) whether or not this instance replicates.
	healthClient, err := kafka.NewClient(f.source, f.logger)
	if err != nil {
		return err
	}
	defer healthClient.Close()
	healthCtx, stopHealth := context.WithCancel(ctx)
	healthDone := make(chan struct{})
	go func() {
		defer close(healthDone)
		f.watchHealth(healthCtx, healthClient, ownClient)
	}()
	defer func() { stopHealth(); <-healthDone }()
	f.metrics.FlowOwner.WithLabelValues(f.cfg.Name).Set(0)
	member := ownership.Join(ownership.Options{
		Client:  ownClient,
		Group:   policy.OwnershipGroup(f.cfg),
		Timeout: f.cfg.OwnershipTimeout,
		Self:    ownership.Self(f.created),
		Logger:  f.logger,
		OnChange: func(s ownership.State) {
			f.owner.Store(&s)
			held := 0.0
			if s.Holding && (!f.cfg.ScaleOut || s.Elected) {
				held = 1
			}
			f.metrics.FlowOwner.WithLabelValues(f.cfg.Name).Set(held)
			if f.cfg.ScaleOut {
				f.metrics.PartitionsOwned.WithLabelValues(f.cfg.Name).Set(float64(s.Owned))
			}
		},
		Partitions: f.cfg.ScaleOut,
	})
	defer member.Leave() // after the writes stopped: hand over at once
	aborts := 0          // runs ended by an aborted transaction in a row
	for {
		lease, err := member.Wait(ctx)
		if err != nil {
			return nil
		}
		runCtx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-lease.Lost():
				cancel()
			case <-runCtx.Done():
			}
		}()
		if f.cfg.ScaleOut {
			err = f.runMember(runCtx, lease, member)
		} else {
			err = f.runOwned(runCtx, lease)
		}
		cancel()
		if errors.Is(err, replicate.ErrTransactionAborted) && ctx.Err() == nil {
			// The positions in memory were past the committed ones: a new
			// run resumes from what is stored.
			aborts++
			wait := retry.Backoff{Base: 500 * time.Millisecond, Max: 30 * time.Second}.Delay(aborts)
			f.metrics.Errors.WithLabelValues(f.cfg.Name, metrics.ErrFlowRestart).Inc()
			f.logger.Warn("restarting the flow from its last committed transaction", "retry_in", wait.String(), "err", err)
			retry.Sleep(ctx, wait)
			continue
		}
		aborts = 0
		if err != nil || ctx.Err() != nil {
			return err
		}
		f.metrics.Errors.WithLabelValues(f.cfg.Name, metrics.ErrOwnershipLost).Inc()
		f.logger.Warn("flow stopped because this instance no longer holds it; waiting to hold it again")
	}
}

// runOwned replicates until ctx is done; every write to the target first
// asks the lease.
func (f *Flow) runOwned(ctx context.Context, lease *ownership.Lease) error {
	cls, err := f.dial(lease)
	if err != nil {
		return err
	}
	defer cls.close()
	srcClient, tgtClient, metaClient := cls.src, cls.tgt, cls.meta

	var wg sync.WaitGroup
	defer wg.Wait()
	// A flow that cannot start ends its helpers before returning.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	store := f.progressStore(metaClient)
	loaded, err := f.setup(ctx, store, cls, nil)
	if errors.Is(err, kafka.ErrStateTopicShape) {
		return fmt.Errorf("flow %q: %w", f.cfg.Name, err)
	}
	if err != nil {
		return nil // ctx ended during setup
	}

	prov, ok := f.startProvenance(ctx, &wg, srcClient, tgtClient)
	if !ok {
		return nil // ctx ended before the cluster IDs were known
	}
	opts := f.replOptions(cls, lease, store, prov)
	fw, stopForward := f.forwarding(ctx, cls)
	defer stopForward() // after Run returned
	opts.Forward = fw
	repl := replicate.New(opts)
	f.repl.Store(repl)
	r := &run{
		Flow: f,
		src:  srcClient, tgt: tgtClient, meta: metaClient,
		srcAdmin: kadm.NewClient(srcClient), tgtAdmin: kadm.NewClient(tgtClient),
		naming: policy.NewTopics(f.cfg).WithGraph(f.graph, f.cfg),
		store:  store, repl: repl, loaded: loaded,
		targetIDs: map[string]string{}, stuckTopics: map[string]bool{},
	}
	lv := &live{src: srcClient, store: groupsync.NewStore(metaClient, policy.CheckpointTopic(f.cfg.Name)).WithAccess(kafka.AccessOf(f.target))}
	lv.groups = groupsync.New(groupsync.Options{
		Source: r.srcAdmin, Target: kadm.NewClient(metaClient),
		Include: f.cfg.GroupsRegexps, Exclude: f.cfg.GroupsExcludeRegexps,
		TargetName: r.naming.TargetName,
		TopicID: func(topic string) string {
			id, _ := repl.TopicID(topic)
			return id
		},
		Translator: repl, Store: lv.store, Logger: f.logger,
		Own: ownRuns(repl, nil), Peers: groupsync.NewPeers(f.conf, f.cfg, srcClient, metaClient),
	})
	f.live.Store(lv)
	f.started.Store(true)
	defer f.started.Store(false)
	defer f.stuck.Store(nil)

	wg.Add(1)
	go func() {
		defer wg.Done()
		r.syncTopics(ctx)
	}()
	if f.cfg.SyncGroupOffsets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.syncGroups(ctx, lv)
		}()
	}
	if f.cfg.ACLs != config.ACLsOff {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.syncACLs(ctx)
		}()
	}
	if f.cfg.HeartbeatInterval > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.heartbeats(ctx)
		}()
	}
	if f.cfg.VerifyInterval > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.verifyLoop(ctx)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.publishStatus(ctx)
	}()
	f.logger.Info("flow started", "source", f.cfg.Source, "target", f.cfg.Target,
		"progress_topic", store.Topic(), "resumed_partitions", len(loaded.Positions))
	// Run's last store marks every partition whose writes were all
	// acknowledged Stopped: the flow's clean stop is known partition by
	// partition, the same way under scale-out.
	if err := repl.Run(ctx); errors.Is(err, replicate.ErrTransactionAborted) {
		return err
	} else if err != nil {
		f.logger.Warn("flow stopped with writes unconfirmed; they will be checked on restart", "err", err)
	}
	f.logger.Info("flow stopped", "replicated_records", repl.Totals().Records)
	return nil
}

// run is the state one Run of a flow shares among its parts: the clients
// of both clusters, the progress store, what it held at start, and the
// data plane.
type run struct {
	*Flow
	src, tgt *kgo.Client
	// meta writes kmirror's own state (progress, checkpoints, ACL
	// records) to the target, apart from the data plane's buffer.
	meta               *kgo.Client
	srcAdmin, tgtAdmin *kadm.Client
	naming             *policy.Topics
	store              *progress.Store
	loaded             progress.Loaded
	repl               *replicate.Replicator
	// Owned by the topic sync goroutine: the target topic ID each
	// replicated topic writes to, and the topics stuck in the last pass.
	targetIDs   map[string]string
	stuckTopics map[string]bool
	// Scale-out only: owns says whether this instance owns a partition
	// (nil: all), and universe, set on the elected instance's topic sync,
	// receives the topics ready to replicate instead of the data plane.
	owns     func(progress.Partition) bool
	universe func([]topicsync.Topic)
	member   *ownership.Member
}

// mine reports whether this instance replicates partition id.
func (r *run) mine(id progress.Partition) bool { return r.owns == nil || r.owns(id) }

// progressStore is the flow's progress store, read and written with
// client. An exactly-once flow's loads wait for the transactions open on
// the topic (progress.Store.Stable): a predecessor's last transaction is
// either committed, and read, or aborted.
func (f *Flow) progressStore(client *kgo.Client) *progress.Store {
	s := progress.NewStore(client, policy.ProgressTopic(f.cfg.Name)).WithAccess(kafka.AccessOf(f.target))
	if f.cfg.ExactlyOnce {
		s = s.Stable()
	}
	return s
}

// setup creates and reads the progress topic, retrying until it succeeds
// or ctx ends.
func (f *Flow) setup(ctx context.Context, store *progress.Store, cls *runClients, member *ownership.Member) (progress.Loaded, error) {
	for attempt := 1; ; attempt++ {
		loaded, err := f.trySetup(ctx, store, cls, member)
		if err == nil {
			return loaded, nil
		}
		if ctx.Err() != nil {
			return loaded, ctx.Err()
		}
		f.metrics.Errors.WithLabelValues(f.cfg.Name, metrics.ErrProgress).Inc()
		if errors.Is(err, kafka.ErrStateTopicShape) {
			// Not transient: running would lose the flow's state later.
			f.logger.Error("flow not started: its progress topic would not keep the flow's state", "err", err)
			return loaded, err
		}
		wait := retry.Backoff{Base: time.Second, Max: 30 * time.Second}.Delay(attempt)
		f.logger.Error("cannot read flow progress from the target; retrying", "retry_in", wait.String(), "err", err)
		if !retry.Sleep(ctx, wait) {
			return loaded, ctx.Err()
		}
	}
}

func (f *Flow) trySetup(ctx context.Context, store *progress.Store, cls *runClients, member *ownership.Member) (progress.Loaded, error) {
	ctx, cancel := context.WithTimeout(ctx, f.target.RequestTimeout+30*time.Second)
	defer cancel()
	if err := store.Ensure(ctx, f.cfg.ReplicationFactor); err != nil {
		return progress.Loaded{}, err
	}
	if f.cfg.ExactlyOnce {
		// The load waits for the transactions open on the progress
		// topic: those of instances that are gone are aborted first.
		f.abortOrphanTransactions(ctx, cls.tgt, f.liveTransactionalIDs(member))
	}
	// Nothing marks the flow running: a partition's position stays
	// Stopped until its new owner stores it cleared, before it writes.
	if f.cfg.ExactlyOnce {
		// A wait for an open transaction is said, not silent.
		start := time.Now()
		// One that nothing will end is named.
		slow := time.AfterFunc(stableWaitNote, func() {
			f.logger.Warn("reading the progress topic waits for a transaction open on it to end (a previous writer's; the brokers end it at its transaction timeout)",
				"progress_topic", store.Topic(), "waited", time.Since(start).Round(time.Second).String())
			f.noteHangingTxns(ctx, cls.tgt, store.Topic(), time.Since(start))
		})
		defer slow.Stop()
	}
	return store.Load(ctx)
}

// stableWaitNote is how long an exactly-once flow's read of its progress
// topic waits for open transactions before it says so.
const stableWaitNote = 15 * time.Second
