// Package flowverify proves that a flow's target holds what its source
// holds: it plans, per partition, the replicated range from the flow's
// stored position and offset map, and compares both sides with
// verify.ComparePartition.
package flowverify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/logread"
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/provenance"
	"github.com/kmirror/kmirror/internal/replicate"
	"github.com/kmirror/kmirror/internal/topology"
	"github.com/kmirror/kmirror/internal/verify"
)

// Options select what VerifyFlow compares.
type Options struct {
	// Topics, if set, keeps only the source topics it fully matches.
	Topics *regexp.Regexp
	// Since, if positive, starts each partition at the first record
	// written at or after that long ago.
	Since time.Duration
	// FromOffset, if positive, starts each partition at that source
	// offset (0: at its log start, as when unset).
	FromOffset int64
	// Parallel is how many partitions are compared at once (default 4).
	Parallel int
	// MaxDifferences bounds the differences kept per partition (default
	// 10); all are counted.
	MaxDifferences int
	// Progress, if set, is called with the total of source offsets to
	// pass once it is known, then with each step passed.
	Progress func(total, step int64)
	Logger   *slog.Logger

	// From, if set, starts each partition it holds at that source
	// offset at least (continuous verification: where the previous
	// audit ended, the SourceEnd and TargetEnd of its PartitionResult).
	From map[progress.Partition]Start
	// MaxRecords, if positive, bounds each partition's range to its
	// newest MaxRecords source offsets.
	MaxRecords int64
	// NoTopicOK makes a flow that replicates no topic yet an empty
	// report rather than an error.
	NoTopicOK bool
}

// TopicResult is the comparison of one source topic with its copy.
type TopicResult struct {
	Topic         string `json:"topic"`
	TargetTopic   string `json:"target_topic"`
	Partitions    int    `json:"partitions"`
	verify.Counts `json:"counts"`
	// Note says why (part of) the topic was not compared.
	Note    string                   `json:"note,omitempty"`
	Details []verify.PartitionResult `json:"partition_results"`
}

// FlowReport is the result of VerifyFlow. See docs/verify.md for its
// JSON form.
type FlowReport struct {
	Flow   string `json:"flow"`
	Source string `json:"source"`
	Target string `json:"target"`
	// Equal is true when no difference was found.
	Equal bool `json:"equal"`
	// CleanStop is true when every partition compared has a position its
	// last owner stored as it stopped cleanly (Stopped): the target past
	// the stored positions is compared too. A partition whose position is
	// not Stopped is compared up to its position only.
	CleanStop bool          `json:"flow_stopped_cleanly"`
	Totals    verify.Counts `json:"totals"`
	Topics    []TopicResult `json:"topics"`
	// Differences are the first differences found, up to MaxDifferences
	// per partition.
	Differences []verify.Difference `json:"differences"`
	ElapsedMs   int64               `json:"elapsed_ms"`
}

// ErrSetup marks errors before any comparison: configuration, clusters
// that do not answer, state that cannot be read.
var ErrSetup = errors.New("cannot verify")

func setupErr(format string, args ...any) error {
	return fmt.Errorf("%w: %w", ErrSetup, fmt.Errorf(format, args...))
}

// VerifyFlow compares every topic flow f of cfg replicates with its copy,
// over the replicated range of each partition, as its offset map relates
// them. It only reads, both clusters.
func VerifyFlow(ctx context.Context, cfg *config.Config, f *config.Flow, o Options) (*FlowReport, error) {
	start := time.Now()
	o = o.withDefaults()
	sc, tc := cfg.Clusters[f.Source], cfg.Clusters[f.Target]
	src, err := connect(ctx, sc, o.Logger)
	if err != nil {
		return nil, setupErr("source: %w", err)
	}
	defer src.Close()
	dst, err := connect(ctx, tc, o.Logger)
	if err != nil {
		return nil, setupErr("target: %w", err)
	}
	defer dst.Close()
	return verifyWith(ctx, start, Env{Flow: f, Clusters: cfg.Clusters, Graph: cfg.Topology(), Source: src, Target: dst}, o)
}

// Start is where a partition's comparison begins on both sides: a
// target record from Target on that the offset map does not account for
// is a difference, unless the range is cut by Options.MaxRecords.
type Start struct {
	Source, Target int64
}

// Env is what Audit compares with: a flow, the clusters and flows of its
// configuration, and clients of its source and target.
type Env struct {
	Flow     *config.Flow
	Clusters map[string]*config.Cluster
	Graph    *topology.Graph
	// Source and Target are connected clients; Audit only reads with
	// clients built from their options.
	Source, Target *kgo.Client
}

// Audit is VerifyFlow with clients already connected: continuous
// verification calls it from a running flow. It only reads.
func Audit(ctx context.Context, e Env, o Options) (*FlowReport, error) {
	return verifyWith(ctx, time.Now(), e, o.withDefaults())
}

// withDefaults fills in the options left zero.
func (o Options) withDefaults() Options {
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	if o.MaxDifferences <= 0 {
		o.MaxDifferences = 10
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

func verifyWith(ctx context.Context, start time.Time, e Env, o Options) (*FlowReport, error) {
	f, src, dst := e.Flow, e.Source, e.Target
	loaded, err := progress.NewStore(dst, policy.ProgressTopic(f.Name)).Load(ctx)
	if err != nil {
		return nil, setupErr("flow %q: %w", f.Name, err)
	}
	v := &verifier{clusters: e.Clusters, graph: e.Graph, f: f, o: o, src: src, dst: dst, loaded: loaded,
		srcAdm: kadm.NewClient(src), dstAdm: kadm.NewClient(dst)}
	if f.UsesProvenance() {
		stop, err := v.provenance(ctx)
		if err != nil {
			return nil, setupErr("%w", err)
		}
		defer stop()
	}
	topics, err := v.topics(ctx)
	if err != nil {
		return nil, setupErr("%w", err)
	}
	rep := &FlowReport{Flow: f.Name, Source: f.Source, Target: f.Target, CleanStop: true}
	var jobs []*job
	for _, t := range topics {
		tr, js, err := v.plan(ctx, t)
		if err != nil {
			return nil, setupErr("%w", err)
		}
		rep.Topics = append(rep.Topics, tr)
		for _, j := range js {
			j.topic = len(rep.Topics) - 1
			if !j.stopped {
				rep.CleanStop = false
			}
		}
		jobs = append(jobs, js...)
	}
	if o.Progress != nil {
		var total int64
		for _, j := range jobs {
			total += j.plan.SourceEnd - j.plan.SourceStart
		}
		o.Progress(total, 0)
	}
	if err := v.run(ctx, jobs); err != nil {
		return nil, err
	}
	for _, j := range jobs {
		tr := &rep.Topics[j.topic]
		tr.Counts.Add(j.res.Counts)
		tr.Details = append(tr.Details, j.res)
		rep.Differences = append(rep.Differences, j.res.Differences...)
	}
	for i := range rep.Topics {
		t := &rep.Topics[i]
		slices.SortFunc(t.Details, func(a, b verify.PartitionResult) int { return int(a.Partition - b.Partition) })
		rep.Totals.Add(t.Counts)
	}
	rep.Equal = rep.Totals.Differences() == 0
	rep.ElapsedMs = time.Since(start).Milliseconds()
	return rep, nil
}

func connect(ctx context.Context, c *config.Cluster, logger *slog.Logger) (*kgo.Client, error) {
	cl, err := kafka.NewClient(c, logger)
	if err != nil {
		return nil, err
	}
	pingCtx, cancel := context.WithTimeout(ctx, c.DialTimeout)
	defer cancel()
	if err := kafka.Ping(pingCtx, cl, c); err != nil {
		cl.Close()
		return nil, err
	}
	return cl, nil
}

type verifier struct {
	clusters       map[string]*config.Cluster
	graph          *topology.Graph
	f              *config.Flow
	o              Options
	src, dst       *kgo.Client
	srcAdm, dstAdm *kadm.Client
	loaded         progress.Loaded
	pv             *replicate.Provenance
}

type job struct {
	topic int
	// stopped says the partition's stored position is Stopped.
	stopped bool
	plan    verify.Plan
	res     verify.PartitionResult
}

// proofWait bounds how long verify waits for the provenance mark of a
// source record to be proven or disproven (the flow it names stores its
// progress every progress_interval); past it the record is expected on
// the target.
const proofWait = 10 * time.Second

// provenance learns what the flow's provenance needs: the cluster IDs of
// its clusters and, best effort, of the configuration's others, and a
// ledger of the source that proves the marks of its records. stop ends
// the ledger.
func (v *verifier) provenance(ctx context.Context) (stop func(), err error) {
	id := func(cl *kgo.Client, alias string) (string, error) {
		m, err := kadm.NewClient(cl).BrokerMetadata(ctx)
		if err != nil {
			return "", fmt.Errorf("cluster %q: reading its metadata: %w", alias, err)
		}
		return m.Cluster, nil
	}
	srcID, err := id(v.src, v.f.Source)
	if err != nil {
		return nil, err
	}
	tgtID, err := id(v.dst, v.f.Target)
	if err != nil {
		return nil, err
	}
	aliases := map[string]string{srcID: v.f.Source, tgtID: v.f.Target}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for alias, c := range v.clusters {
		if alias == v.f.Source || alias == v.f.Target {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			cl, err := kafka.NewClient(c, v.o.Logger)
			if err != nil {
				return
			}
			defer cl.Close()
			m, err := kadm.NewClient(cl).BrokerMetadata(cctx)
			if err != nil || m.Cluster == "" {
				v.o.Logger.Warn("cluster ID unknown: records first written there and dropped by the flow count as missing", "cluster", alias, "err", err)
				return
			}
			mu.Lock()
			aliases[m.Cluster] = alias
			mu.Unlock()
		})
	}
	wg.Wait()
	graph := v.graph
	source, target := v.f.Source, v.f.Target
	srcCluster := v.clusters[source]
	if srcCluster == nil {
		return nil, fmt.Errorf("cluster %q is not in the configuration", source)
	}
	cl, err := kafka.NewClient(srcCluster, v.o.Logger, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return nil, err
	}
	ledger := provenance.NewLedger(provenance.LedgerOptions{Client: cl, ProgressTopic: policy.ProgressTopic, Logger: v.o.Logger})
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ledger.Run(lctx)
	}()
	v.pv = &replicate.Provenance{
		Flow: v.f.Name, SourceID: srcID, TargetID: tgtID,
		Routed: func(origin string) bool {
			alias, ok := aliases[origin]
			return ok && graph.Decide(source, target, alias) == topology.Routed
		},
		Ledger: ledger,
		Legacy: func(prev string) []string {
			alias, ok := aliases[prev]
			if !ok {
				return nil
			}
			var out []string
			for _, e := range graph.Edges() {
				if e.Provenance && e.Source == alias && e.Target == source {
					out = append(out, e.Flow)
				}
			}
			return out
		},
	}
	return func() { cancel(); <-done; cl.Close() }, nil
}

// topics lists the source topics the flow replicates, sorted, narrowed by
// Options.Topics.
func (v *verifier) topics(ctx context.Context) ([]kadm.TopicDetail, error) {
	td, err := v.srcAdm.ListTopics(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing the source topics: %w", err)
	}
	naming := policy.NewTopics(v.f).WithGraph(v.graph, v.f)
	var out []kadm.TopicDetail
	for _, d := range td.Sorted() {
		if d.Err != nil || d.IsInternal || !naming.Matches(d.Topic) {
			continue
		}
		if v.o.Topics != nil && !v.o.Topics.MatchString(d.Topic) {
			continue
		}
		out = append(out, d)
	}
	if len(out) == 0 && !v.o.NoTopicOK {
		return nil, fmt.Errorf("flow %q replicates no source topic that --topics matches", v.f.Name)
	}
	return out, nil
}

func compacted(ctx context.Context, adm *kadm.Client, topic string) (bool, error) {
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return false, err
	}
	rc, err := rcs.On(topic, nil)
	if err != nil {
		return false, err
	}
	if rc.Err != nil {
		return false, rc.Err
	}
	for _, c := range rc.Configs {
		if c.Key == "cleanup.policy" && c.Value != nil && strings.Contains(*c.Value, "compact") {
			return true, nil
		}
	}
	return false, nil
}

type listed map[int32]int64

func list(ctx context.Context, what string, f func(context.Context, ...string) (kadm.ListedOffsets, error), topic string) (listed, error) {
	lo, err := f(ctx, topic)
	if err == nil {
		err = lo.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s offsets of %q: %w", what, topic, err)
	}
	out := listed{}
	lo.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out, nil
}

// plan works out the range of every partition of source topic d.
func (v *verifier) plan(ctx context.Context, d kadm.TopicDetail) (TopicResult, []*job, error) {
	naming := policy.NewTopics(v.f)
	t := d.Topic
	tr := TopicResult{Topic: t, TargetTopic: naming.TargetName(t), Partitions: len(d.Partitions)}
	srcStarts, err := list(ctx, "start", v.srcAdm.ListStartOffsets, t)
	if err != nil {
		return tr, nil, err
	}
	srcEnds, err := list(ctx, "stable end", v.srcAdm.ListCommittedOffsets, t)
	if err != nil {
		return tr, nil, err
	}
	var since listed
	if v.o.Since > 0 {
		ms := time.Now().Add(-v.o.Since).UnixMilli()
		if since, err = list(ctx, "timestamp", func(ctx context.Context, ts ...string) (kadm.ListedOffsets, error) {
			return v.srcAdm.ListOffsetsAfterMilli(ctx, ms, ts...)
		}, t); err != nil {
			return tr, nil, err
		}
	}
	srcCompact, err := compacted(ctx, v.srcAdm, t)
	if err != nil {
		return tr, nil, fmt.Errorf("describing source topic %q: %w", t, err)
	}
	tds, err := v.dstAdm.ListTopics(ctx, tr.TargetTopic)
	if err != nil {
		return tr, nil, fmt.Errorf("listing target topic %q: %w", tr.TargetTopic, err)
	}
	if td, ok := tds[tr.TargetTopic]; !ok || td.Err != nil {
		// Nothing copied can be on the target: every record of the
		// replicated range is missing. With no target topic the
		// comparison reads nothing from it.
		tr.Note = fmt.Sprintf("target topic %q does not exist", tr.TargetTopic)
	}
	var dstStarts, dstEnds listed
	dstCompact := false
	if tr.Note == "" {
		if dstStarts, err = list(ctx, "start", v.dstAdm.ListStartOffsets, tr.TargetTopic); err != nil {
			return tr, nil, err
		}
		if dstEnds, err = list(ctx, "end", v.dstAdm.ListEndOffsets, tr.TargetTopic); err != nil {
			return tr, nil, err
		}
		if dstCompact, err = compacted(ctx, v.dstAdm, tr.TargetTopic); err != nil {
			return tr, nil, fmt.Errorf("describing target topic %q: %w", tr.TargetTopic, err)
		}
	}
	var jobs []*job
	for _, p := range d.Partitions.Numbers() {
		id := progress.Partition{Topic: t, Partition: p}
		pos, hasPos := v.loaded.Positions[id]
		runs := v.loaded.Runs[id]
		stopped := hasPos && pos.Stopped
		j := &job{plan: verify.Plan{Topic: t, TargetTopic: tr.TargetTopic, Partition: p, Runs: runs,
			Compacted: srcCompact || dstCompact, Ignore: []string{replicate.HeaderProvenance}, MaxDifferences: v.o.MaxDifferences}}
		j.res.Partition = p
		j.stopped = stopped
		jobs = append(jobs, j)
		if hasPos && pos.TopicID != "" && d.ID.String() != pos.TopicID && d.ID != [16]byte{} {
			j.res.Note = "the stored progress belongs to an earlier topic of this name: not replicated yet"
			continue
		}
		if len(runs) == 0 {
			j.res.Note = "nothing replicated yet (no offset map)"
			continue
		}
		last := runs[len(runs)-1]
		end := last.Covered()
		if hasPos {
			end = max(pos.SourceNext, last.SourceEnd())
		}
		end = min(end, srcEnds[p])
		begin := srcStarts[p]
		switch {
		case v.o.FromOffset > 0:
			begin = max(begin, v.o.FromOffset)
		case since != nil:
			if o, ok := since[p]; ok && o >= 0 {
				begin = max(begin, o)
			} else {
				begin = end
			}
		}
		from, hasFrom := v.o.From[id]
		if hasFrom {
			begin = max(begin, from.Source)
		}
		if v.o.MaxRecords > 0 {
			begin = max(begin, end-v.o.MaxRecords)
		}
		if from := runs[0].From(); begin < from {
			j.res.Note = fmt.Sprintf("the offset map starts at source offset %d: records before it are not compared", from)
			begin = from
		}
		begin = min(begin, end)
		tgtNext := last.TargetEnd()
		if hasPos && pos.TargetNext >= 0 {
			tgtNext = max(tgtNext, pos.TargetNext)
		}
		j.plan.SourceStart, j.plan.SourceEnd = begin, end
		j.plan.TargetStart = offsets.NewMap(runs).Translate(begin, tgtNext).Target
		if hasFrom && begin == from.Source && from.Target >= 0 && from.Target < j.plan.TargetStart {
			// Target records written between the previous range and
			// this one are compared too (extra, duplicated).
			j.plan.TargetStart = from.Target
		}
		j.plan.TargetEnd = tgtNext
		if tr.Note != "" {
			j.plan.TargetStart, j.plan.TargetEnd = 0, 0
			continue
		}
		j.plan.TargetLogStart = dstStarts[p]
		if stopped && begin < end {
			// Stopped cleanly: every record the flow wrote is before the
			// stored position, so anything after it is not the flow's.
			j.plan.TargetEnd = max(j.plan.TargetEnd, dstEnds[p])
		}
		if v.pv != nil {
			pv, target := v.pv, tr.TargetTopic
			// A source record is not copied only when its mark proves it
			// a copy the flow it names made, of a record already on the
			// target (or brought there by another flow). A record with a
			// mark that is not proven (forwarded by an application, or
			// forged) is expected on the target like any other.
			j.plan.NotCopied = func(r *kgo.Record) bool { return pv.DecideWait(ctx, r, target, proofWait).Drop != "" }
			// With provenance, the flow's copies say they were: other
			// records were written by other flows or producers.
			j.plan.Foreign = func(r *kgo.Record) bool { return !pv.Wrote(r) }
		}
	}
	return tr, jobs, nil
}

// run compares the jobs, Parallel at a time.
func (v *verifier) run(ctx context.Context, jobs []*job) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, v.o.Parallel)
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	for _, j := range jobs {
		if j.plan.SourceStart >= j.plan.SourceEnd && j.plan.TargetStart >= j.plan.TargetEnd {
			j.res.SourceStart, j.res.SourceEnd = j.plan.SourceStart, j.plan.SourceEnd
			j.res.TargetStart, j.res.TargetEnd = j.plan.TargetStart, j.plan.TargetEnd
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			note := j.res.Note
			res, err := v.compare(ctx, j)
			res.Note = note
			j.res = res
			if err != nil {
				firstErr.CompareAndSwap(nil, &err)
				cancel()
			}
		})
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return *p
	}
	return ctx.Err()
}

func (v *verifier) compare(ctx context.Context, j *job) (verify.PartitionResult, error) {
	p := &j.plan
	srcOpts := logread.Options{ReadUncommitted: v.f.Consumer.IsolationLevel == config.ReadUncommitted, MaxFetchBytes: fetchBytes}
	src := readRange(ctx, v.src, logread.Range{Topic: p.Topic, Partition: p.Partition, From: p.SourceStart, End: p.SourceEnd}, srcOpts)
	defer src.close()
	var dst verify.RecordStream = emptyStream{}
	if p.TargetEnd > p.TargetStart {
		from := max(p.TargetStart, p.TargetLogStart)
		s := readRange(ctx, v.dst, logread.Range{Topic: p.TargetTopic, Partition: p.Partition, From: from, End: p.TargetEnd}, logread.Options{MaxFetchBytes: fetchBytes})
		defer s.close()
		dst = s
	}
	var step func(int64)
	if v.o.Progress != nil {
		step = func(n int64) { v.o.Progress(0, n) }
	}
	return verify.ComparePartition(ctx, p, src, dst, step)
}

// emptyStream is a range with no record.
type emptyStream struct{}

func (emptyStream) Next(context.Context) (*kgo.Record, error) { return nil, nil }

// fetchBytes bounds each fetch of a comparison, as sent by the broker
// (compressed): a stream holds at most two fetches, decompressed.
const fetchBytes = 2 << 20
