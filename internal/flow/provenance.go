package flow

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/provenance"
	"github.com/kmirror/kmirror/internal/replicate"
	"github.com/kmirror/kmirror/internal/retry"
	"github.com/kmirror/kmirror/internal/topology"
)

// provenanceWait bounds how long a flow with provenance waits at start for
// the cluster IDs of the configuration's other clusters; those not known
// by then are learnt in the background.
const provenanceWait = 5 * time.Second

// clusterIDs maps the Kafka cluster IDs of the configuration's clusters to
// their aliases, as they are learnt. Readers never block: the map is
// replaced whole.
type clusterIDs struct {
	mu      sync.Mutex // serializes writers
	aliases atomic.Pointer[map[string]string]
}

func newClusterIDs() *clusterIDs {
	ids := &clusterIDs{}
	ids.aliases.Store(&map[string]string{})
	return ids
}

// alias returns the alias of the cluster with ID id, if known.
func (ids *clusterIDs) alias(id string) (string, bool) {
	a, ok := (*ids.aliases.Load())[id]
	return a, ok
}

// add records that cluster alias has ID id. It returns the alias already
// known for id, if another.
func (ids *clusterIDs) add(id, alias string) (other string) {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	cur := *ids.aliases.Load()
	if a, ok := cur[id]; ok {
		if a != alias {
			return a
		}
		return ""
	}
	next := maps.Clone(cur)
	next[id] = alias
	ids.aliases.Store(&next)
	return ""
}

// startProvenance returns what the flow does with each record by its
// provenance header, or nil if the flow keeps no provenance. It first
// learns the cluster IDs of the flow's source and target, retrying until
// it does; it returns false if ctx ended first.
//
// The IDs of the configuration's other clusters are learnt in the
// background (on wg, until ctx ends), each retried with backoff until its
// cluster answers; the flow waits up to provenanceWait for them before it
// starts. Until the ID of a record's origin is known, the flow cannot
// tell that another flow of a mesh brings that origin's records to the
// target: it writes them if the loop check lets them through, so a mesh
// may hold such records twice meanwhile (never in a loop).
func (f *Flow) startProvenance(ctx context.Context, wg *sync.WaitGroup, src, tgt *kgo.Client) (*replicate.Provenance, bool) {
	if !f.cfg.UsesProvenance() {
		return nil, true
	}
	ids := newClusterIDs()
	srcID, ok := f.learnClusterID(ctx, src, f.source)
	if !ok {
		return nil, false
	}
	tgtID, ok := f.learnClusterID(ctx, tgt, f.target)
	if !ok {
		return nil, false
	}
	if srcID == tgtID {
		f.metrics.Errors.WithLabelValues(f.cfg.Name, metrics.ErrOther).Inc()
		f.logger.Error("source and target report the same cluster ID: with provenance every record is already on the target and none is written; set provenance: off for the flow to copy within one cluster",
			"source", f.source.Alias, "target", f.target.Alias, "cluster_id", srcID)
	}
	f.learnt(ids, srcID, f.source.Alias)
	f.learnt(ids, tgtID, f.target.Alias)

	var others []*config.Cluster
	for _, alias := range f.graph.Clusters() {
		if c := f.peers[alias]; c != nil && alias != f.source.Alias && alias != f.target.Alias {
			others = append(others, c)
		}
	}
	var pending sync.WaitGroup
	for _, c := range others {
		pending.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer pending.Done()
			f.learnOtherClusterID(ctx, ids, c)
		}()
	}
	all := make(chan struct{})
	go func() { pending.Wait(); close(all) }()
	wait := time.NewTimer(provenanceWait)
	defer wait.Stop()
	select {
	case <-all:
	case <-wait.C:
		var missing []string
		for _, c := range others {
			if !slices.Contains(slices.Collect(maps.Values(*ids.aliases.Load())), c.Alias) {
				missing = append(missing, c.Alias)
			}
		}
		f.logger.Warn("cluster IDs of other clusters not known yet; until they are, records first written there are written to the target if it is not in their provenance (a mesh may hold them twice meanwhile)",
			"clusters", missing)
	case <-ctx.Done():
		return nil, false
	}
	ledger, err := f.startLedger(ctx, wg)
	if err != nil {
		f.metrics.Errors.WithLabelValues(f.cfg.Name, metrics.ErrOther).Inc()
		f.logger.Error("flow not started: cannot open the client that proves provenance marks", "cluster", f.source.Alias, "err", err)
		return nil, false
	}
	f.logger.Info("provenance on: records carry the flow's name and the IDs of the clusters they were written to; marks of source records are proven against the progress of the flow they name",
		"header", replicate.HeaderProvenance, "source_id", srcID, "target_id", tgtID)
	source, target := f.cfg.Source, f.cfg.Target
	return &replicate.Provenance{
		Flow:     f.cfg.Name,
		SourceID: srcID,
		TargetID: tgtID,
		Routed: func(origin string) bool {
			alias, ok := ids.alias(origin)
			return ok && f.graph.Decide(source, target, alias) == topology.Routed
		},
		Ledger: ledger,
		Legacy: func(prev string) []string {
			alias, ok := ids.alias(prev)
			if !ok {
				return nil
			}
			return legacyWriters(f.graph, alias, source)
		},
	}, true
}

// legacyWriters returns the flows of graph from cluster from into cluster
// into that keep provenance: those that may have written a mark of the
// older format ending with their clusters.
func legacyWriters(graph *topology.Graph, from, into string) []string {
	var out []string
	for _, e := range graph.Edges() {
		if e.Provenance && e.Source == from && e.Target == into {
			out = append(out, e.Flow)
		}
	}
	return out
}

// startLedger starts, on wg until ctx ends, the reader of the progress of
// the flows that write into the flow's source: it proves which source
// records are their copies.
func (f *Flow) startLedger(ctx context.Context, wg *sync.WaitGroup) (*provenance.Ledger, error) {
	cl, err := kafka.NewClient(f.source, f.logger, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return nil, err
	}
	ledger := provenance.NewLedger(provenance.LedgerOptions{
		Client:        cl,
		ProgressTopic: policy.ProgressTopic,
		Live: func(writer string) provenance.LiveWriter {
			// Only a sibling writing into this flow's source knows the
			// offsets of records read here.
			s := f.siblings[writer]
			if s == nil || s.cfg.Target != f.cfg.Source {
				return nil
			}
			if repl := s.repl.Load(); repl != nil {
				return repl
			}
			return nil
		},
		OnError: func(string, error) {
			f.metrics.Errors.WithLabelValues(f.cfg.Name, metrics.ErrProvenance).Inc()
		},
		Logger: f.logger.With("cluster", f.source.Alias),
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer cl.Close()
		ledger.Run(ctx)
	}()
	return ledger, nil
}

// learnt records the ID of cluster alias, and logs a second alias of one
// cluster: records of that cluster are routed by the first.
func (f *Flow) learnt(ids *clusterIDs, id, alias string) {
	if other := ids.add(id, alias); other != "" {
		f.logger.Warn("two clusters of the configuration report the same cluster ID; the provenance header names the first",
			"cluster", alias, "same_as", other, "cluster_id", id)
	}
}

// learnClusterID returns the cluster ID of c through its client cl,
// retrying with backoff until it has it; false if ctx ended first.
func (f *Flow) learnClusterID(ctx context.Context, cl *kgo.Client, c *config.Cluster) (string, bool) {
	errLog := retry.Throttle{Every: 30 * time.Second}
	for attempt := 1; ; attempt++ {
		id, err := clusterID(ctx, cl, c)
		if err == nil {
			return id, true
		}
		if ctx.Err() != nil {
			return "", false
		}
		f.clusterIDFailed(c, err, errLog.Allow(), "flow not started: cannot learn the cluster ID its provenance header needs; retrying")
		if !retry.Sleep(ctx, retry.Backoff{Base: time.Second, Max: 30 * time.Second}.Delay(attempt)) {
			return "", false
		}
	}
}

// learnOtherClusterID learns the ID of c, a cluster of the configuration
// other than the flow's, retrying with backoff until it has it or ctx
// ends.
func (f *Flow) learnOtherClusterID(ctx context.Context, ids *clusterIDs, c *config.Cluster) {
	errLog := retry.Throttle{Every: 5 * time.Minute}
	failed := false
	for attempt := 1; ; attempt++ {
		id, err := f.otherClusterID(ctx, c)
		if err == nil {
			f.learnt(ids, id, c.Alias)
			if failed {
				f.logger.Info("cluster ID learnt; records first written there are routed by the topology again", "cluster", c.Alias, "cluster_id", id)
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		failed = true
		f.clusterIDFailed(c, err, errLog.Allow(), "cannot learn the cluster ID of another cluster of the configuration; retrying")
		if !retry.Sleep(ctx, retry.Backoff{Base: time.Second, Max: time.Minute}.Delay(attempt)) {
			return
		}
	}
}

func (f *Flow) otherClusterID(ctx context.Context, c *config.Cluster) (string, error) {
	cl, err := kafka.NewClient(c, nil)
	if err != nil {
		return "", err
	}
	defer cl.Close()
	return clusterID(ctx, cl, c)
}

// clusterIDFailed counts a failure to learn the ID of cluster c and logs
// it if log says so.
func (f *Flow) clusterIDFailed(c *config.Cluster, err error, log bool, msg string) {
	kind, _ := kafka.ClassifyError(c, err)
	f.metrics.Errors.WithLabelValues(f.cfg.Name, kind).Inc()
	if log {
		f.logger.Error(msg, "cluster", c.Alias, "kind", kind, "err", err)
	}
}

// clusterID asks cluster c, through cl, for its cluster ID.
func clusterID(ctx context.Context, cl *kgo.Client, c *config.Cluster) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.RequestTimeout)
	defer cancel()
	m, err := kadm.NewClient(cl).BrokerMetadata(ctx)
	if err != nil {
		return "", fmt.Errorf("cluster %q: reading its metadata: %w", c.Alias, err)
	}
	if m.Cluster == "" {
		return "", fmt.Errorf("cluster %q reports no cluster ID; provenance needs one (set provenance: off on the flows of this cluster)", c.Alias)
	}
	return m.Cluster, nil
}
