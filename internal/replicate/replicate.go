// Package replicate is kmirror's data plane: it fetches records from the
// source cluster, writes them to the same partition of the target topic
// with key, value, headers and timestamp unchanged, and records progress
// only after the target acknowledged them.
//
// Ordering and safety rest on these rules:
//   - records of one source partition are produced in source order to one
//     target partition, and franz-go's idempotent producer acknowledges
//     them in that order;
//   - a partition's position advances only over acknowledged records, so
//     progress never runs ahead of the target;
//   - a record is sent to the target only once every earlier record of its
//     partition was acknowledged or is in flight in the same sequence: a
//     record's context (orderGate) fails it, unsent, as soon as an earlier
//     record of its partition failed. So nothing reaches the target after
//     a refused record;
//   - a failed write stops the partition, waits for its writes in flight,
//     and rewinds it to the first record that failed, after a backoff.
//     Nothing is skipped;
//   - a record refused as too large or invalid is tried again alone; if
//     the target refuses it alone too, the partition stops there with one
//     error and tries again every RefusedRetryInterval, or, with a
//     dead-letter topic, the record goes there, is counted, and the
//     partition goes on;
//   - records the source deleted before they were copied (retention,
//     DeleteRecords) are counted with their exact offset range; records of
//     a source partition truncated below the position are copied as new
//     data; target offsets going backwards are reported as target data
//     loss;
//   - with provenance on (Options.Provenance), a record whose provenance
//     header shows it is already on the target, or that another flow
//     brings there, is not written; the position moves past it like past
//     a transaction marker. Every record written carries the header.
package replicate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/retry"
)

// DefaultRefusedRetryInterval is how long a partition stopped at a refused
// record waits before trying it again, unless Options say otherwise.
const DefaultRefusedRetryInterval = 5 * time.Minute

// Headers added to a record written to the dead-letter topic.
const (
	HeaderSourceTopic     = "kmirror.source.topic"
	HeaderSourcePartition = "kmirror.source.partition"
	HeaderSourceOffset    = "kmirror.source.offset"
	HeaderError           = "kmirror.error"
)

// Options configure a Replicator.
type Options struct {
	Flow string
	// Source consumes the flow's source partitions; it must be a direct
	// (non-group) consumer. The Replicator adds and removes partitions.
	Source *kgo.Client
	// Target produces to the target cluster with a manual partitioner.
	Target *kgo.Client
	// Progress stores positions in the target cluster.
	Progress *progress.Store
	// ProgressInterval is how often acknowledged positions are written.
	ProgressInterval time.Duration
	// OffsetMapRetention is how long the offset map keeps a run after
	// its last record was written; OffsetMapMaxRuns bounds the runs kept
	// per partition. Zero means the defaults.
	OffsetMapRetention time.Duration
	OffsetMapMaxRuns   int
	// DeadLetterTopic, if set, is a topic of the target cluster that
	// receives the records the target refuses for good (too large,
	// invalid), with headers naming their source and the reason; the
	// partition then goes on. Without it the partition stops there.
	DeadLetterTopic string
	// RefusedRetryInterval is how long a partition stopped at a refused
	// record waits before trying it again; zero means
	// DefaultRefusedRetryInterval.
	RefusedRetryInterval time.Duration
	// SourceAccess and TargetAccess name the clusters and kmirror's
	// principals in errors about missing ACLs.
	SourceAccess kafka.Access
	TargetAccess kafka.Access
	// Provenance, if set, decides record by record what is written and
	// sets the provenance header (see Provenance); records it does not
	// write move the position like transaction markers. Nil copies
	// headers as they are.
	Provenance *Provenance
	// ProofWait is how long a record whose provenance mark can be neither
	// proven nor disproven yet holds its partition (the flow it names has
	// not stored its progress that far); past it, the mark counts as not
	// proven and the record is written. Zero means DefaultProofWait.
	ProofWait time.Duration
	Metrics   *metrics.Metrics
	Logger    *slog.Logger
}

// Assignment starts replication of one source partition.
type Assignment struct {
	Source progress.Partition
	// TargetTopic is the topic the partition's records go to, on the
	// same partition number.
	TargetTopic string
	// Start is the position to resume from.
	Start progress.Position
	// Runs is the partition's stored offset map, sorted.
	Runs []offsets.Run
	// StoreFirst says the start position is not stored yet (a partition
	// replicated for the first time): nothing is read from the partition
	// until the position, with the target offset its first copy will get,
	// is stored. A crash after the first writes then finds them on
	// restart, and compares them instead of writing them again.
	//
	// A Start that is Stopped (its last owner stopped cleanly there) is
	// always stored first, cleared: otherwise a crash after the first
	// writes would leave a position that claims a clean stop.
	StoreFirst bool
}

// Totals are counters over the replicator's lifetime.
type Totals struct {
	Records    int64 // acknowledged by the target
	Bytes      int64
	Lag        int64 // sum over partitions of source end offset minus position
	Partitions int
	Failing    int // partitions waiting to retry a failed write
	// Stopped are the partitions stopped at a record the target refuses
	// for good, sorted by topic and partition.
	Stopped []Stopped `json:",omitempty"`
}

// Stopped is a partition stopped at a record the target refuses.
type Stopped struct {
	Topic     string
	Partition int32
	Offset    int64  // source offset of the refused record
	Reason    string // the target's error
	Since     time.Time
}

// Replicator copies records of its assigned partitions. Run drives it; Add
// and Remove may be called while it runs.
type Replicator struct {
	opts    Options
	latency prometheus.Observer
	stopped prometheus.Gauge

	mu    sync.RWMutex
	parts map[string]map[int32]*partition

	records, bytes atomic.Int64
	nstopped       atomic.Int64

	pollMu   sync.Mutex
	wakePoll context.CancelFunc // ends the poll in progress, if any

	// storeNow asks the progress loop for a write at once: partitions
	// wait for their start position to be stored (Assignment.StoreFirst).
	storeNow chan struct{}

	progressMu sync.Mutex // serialises progress writes

	deadLetters  sync.WaitGroup // writes to the dead-letter topic
	deadLetterOK atomic.Bool    // the dead-letter topic is known to exist
}

// New returns a Replicator.
func New(opts Options) *Replicator {
	if opts.RefusedRetryInterval <= 0 {
		opts.RefusedRetryInterval = DefaultRefusedRetryInterval
	}
	if opts.ProofWait <= 0 {
		opts.ProofWait = DefaultProofWait
	}
	r := &Replicator{
		opts:     opts,
		latency:  opts.Metrics.Latency.WithLabelValues(opts.Flow),
		stopped:  opts.Metrics.PartitionsStopped.WithLabelValues(opts.Flow),
		parts:    map[string]map[int32]*partition{},
		storeNow: make(chan struct{}, 1),
	}
	r.stopped.Set(0)
	return r
}

// partition is the state of one replicated source partition.
type partition struct {
	id     progress.Partition
	target string

	// fedNext is the offset after the last record handed to the producer.
	// paused, probeOne and probing are the poll loop's too: probeOne says
	// the next record fed is a probe, sent alone; probing that it was, and
	// nothing more is fed until its answer.
	fedNext  int64
	paused   bool
	probeOne bool
	probing  bool
	// dropNext is the offset after the last record counted as dropped
	// for its provenance, so a record fetched again after a rewind is
	// counted once; foreignNext the same for records counted as foreign.
	dropNext, foreignNext int64
	// held, if not empty, starts with the record whose provenance mark is
	// not decided yet, followed by the records fetched after it: the
	// partition is paused at it since heldSince, and they are fed once it
	// is decided. Marks of records before unprovenTo are not waited for
	// any more.
	held       []*kgo.Record
	heldSince  time.Time
	unprovenTo int64

	inflight atomic.Int64
	hwm      atomic.Int64 // source end offset last seen, -1 if unknown
	// halted is set when a write failed, before that write counts as
	// settled: no record is handed to the producer, and no record already
	// handed to it is sent, after a write failed (see orderGate).
	halted atomic.Bool
	// produced counts records handed to the producer; settled those the
	// producer answered. orderGate compares them.
	produced, settled atomic.Int64

	// start is where reading starts once the start position is stored
	// (Assignment.StoreFirst); nil when reading started.
	start *kgo.Offset

	mu        sync.Mutex
	acked     progress.Position // advanced only over acknowledged records
	omap      *offsets.Map      // source→target offsets of acknowledged records
	persisted int64             // acked.SourceNext last written to progress
	// persistedIdle is acked.IdleEnd last written to progress.
	persistedIdle int64
	// storedStopped says the position last stored is Stopped (or, before
	// the first store, the start position was).
	storedStopped bool
	// doubt says a write failed in a way that may have left it on the
	// target (not refused by the target, not failed unsent): records past
	// acked may be there until a later write is acknowledged, so the
	// position is not exact and is not stored as Stopped.
	doubt    bool
	failed   bool
	failedAt int64 // first source offset whose write failed
	// pendingControl is the offset of the newest transaction marker seen
	// while writes were in flight, or -1; the position moves past it once
	// they are acknowledged.
	pendingControl int64
	// ackedEpoch is the source leader epoch of the record just before
	// acked.SourceNext, or -1 when unknown; pendingEpoch that of
	// pendingControl. Stored with the position, it lets a restart detect
	// a source truncated while the flow was stopped.
	ackedEpoch, pendingEpoch int32
	failures                 int // consecutive failed attempts, for the backoff
	retryAt                  time.Time
	// probe says the next retry sends the failed record alone: it was
	// refused as too large or invalid, maybe only with the records
	// batched with it. probeAt is the offset of the probe in flight, or -1.
	probe    bool
	probeAt  int64
	probeEnd int64 // the last offset refused as too large or invalid in this streak
	// refused is the record the target refused alone, if any: the
	// partition is stopped at it, or it is on its way to the dead-letter
	// topic.
	refused *refusal
	// truncated says the rewind at failedAt follows a source truncation:
	// the position and the offset map are cut back to failedAt.
	truncated bool
	// targetLossAt is when the producer last reported, and targetBackAt
	// when acked last saw, that the target partition lost records, each
	// counted then; zero once the other report of the same loss came.
	targetLossAt, targetBackAt time.Time

	records, bytes, retried, duplicates prometheus.Counter
	lost, deadLettered                  prometheus.Counter
	loopDrops, routedDrops              prometheus.Counter
	foreign, unproven                   prometheus.Counter
	lag                                 prometheus.Gauge

	// pend are the records handed to the producer, for Pending.
	pendMu sync.Mutex
	pend   pendingList
}

// refusal is a record the target refused on its own.
type refusal struct {
	rec    *kgo.Record // as produced to the target
	offset int64       // source offset
	reason string
	since  time.Time
	// stopped says the partition counts as stopped (no dead-letter topic,
	// or writing there failed).
	stopped bool
	// writing says the dead-letter write is in flight.
	writing bool
}

func (r *Replicator) lookup(topic string, p int32) *partition {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.parts[topic][p]
}

func (r *Replicator) each(fn func(*partition)) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, ps := range r.parts {
		for _, p := range ps {
			fn(p)
		}
	}
}

// Add starts replicating the given partitions; partitions already
// replicated are ignored.
func (r *Replicator) Add(as []Assignment) {
	m := r.opts.Metrics
	add := map[string]map[int32]kgo.Offset{}
	waiting := false
	r.mu.Lock()
	for _, a := range as {
		if r.parts[a.Source.Topic][a.Source.Partition] != nil {
			continue
		}
		storeFirst := a.StoreFirst || a.Start.Stopped
		p := &partition{
			id:             a.Source,
			target:         a.TargetTopic,
			fedNext:        a.Start.SourceNext,
			acked:          a.Start,
			storedStopped:  a.Start.Stopped,
			ackedEpoch:     -1,
			omap:           offsets.NewMap(a.Runs),
			persisted:      -1,
			pendingControl: -1,
			probeAt:        -1,
			records:        m.ReplicatedRecords.WithLabelValues(r.opts.Flow, a.Source.Topic),
			bytes:          m.ReplicatedBytes.WithLabelValues(r.opts.Flow, a.Source.Topic),
			retried:        m.Retried.WithLabelValues(r.opts.Flow, a.Source.Topic),
			duplicates:     m.Duplicates.WithLabelValues(r.opts.Flow, a.Source.Topic),
			lost:           m.RecordsLost.WithLabelValues(r.opts.Flow, a.Source.Topic),
			deadLettered:   m.DeadLettered.WithLabelValues(r.opts.Flow, a.Source.Topic),
			loopDrops:      m.ProvenanceDropped.WithLabelValues(r.opts.Flow, a.Source.Topic, metrics.DropLoop),
			routedDrops:    m.ProvenanceDropped.WithLabelValues(r.opts.Flow, a.Source.Topic, metrics.DropRouted),
			foreign:        m.ProvenanceForeign.WithLabelValues(r.opts.Flow, a.Source.Topic, metrics.ForeignNotCopy),
			unproven:       m.ProvenanceForeign.WithLabelValues(r.opts.Flow, a.Source.Topic, metrics.ForeignUnproven),
			lag:            m.PartitionLag.WithLabelValues(r.opts.Flow, a.Source.Topic, strconv.Itoa(int(a.Source.Partition))),
		}
		p.acked.Stopped = false
		p.hwm.Store(-1)
		p.omap.Start(a.Start.SourceNext)
		if r.parts[a.Source.Topic] == nil {
			r.parts[a.Source.Topic] = map[int32]*partition{}
		}
		r.parts[a.Source.Topic][a.Source.Partition] = p
		start := kgo.NewOffset().At(a.Start.SourceNext)
		if e := a.Start.LeaderEpoch; e != nil && *e >= 0 {
			// The consumer checks the source still holds the record before
			// the position in that epoch, and reports a truncation if not.
			p.ackedEpoch = *e
			start = start.WithEpoch(*e)
		}
		if storeFirst {
			p.start = &start
			waiting = true
			continue
		}
		if add[a.Source.Topic] == nil {
			add[a.Source.Topic] = map[int32]kgo.Offset{}
		}
		add[a.Source.Topic][a.Source.Partition] = start
	}
	r.mu.Unlock()
	if waiting {
		select {
		case r.storeNow <- struct{}{}:
		default:
		}
	}
	if len(add) > 0 {
		r.opts.Source.AddConsumePartitions(add)
		for topic, ps := range add {
			r.opts.Logger.Info("replicating topic", "topic", topic, "new_partitions", len(ps))
		}
	}
	r.updateGauges()
}

// Removed is the state of a partition when it stopped being replicated.
type Removed struct {
	// Position is the partition's acknowledged position; it may be ahead
	// of the stored one.
	Position progress.Position
	// Runs is the partition's offset map.
	Runs []offsets.Run
}

// Remove stops replicating every partition of the given source topics,
// drops what the source client holds of them (so a topic created again
// under the same name is read afresh once added again), and returns the
// partitions' state at removal.
func (r *Replicator) Remove(topics []string) map[progress.Partition]Removed {
	rm := map[string][]int32{}
	out := map[progress.Partition]Removed{}
	r.mu.Lock()
	for _, t := range topics {
		for id, p := range r.parts[t] {
			rm[t] = append(rm[t], id)
			r.opts.Metrics.PartitionLag.DeleteLabelValues(r.opts.Flow, t, strconv.Itoa(int(id)))
			// Records of the topic still in the poll loop's hands are not
			// handed to the producer any more.
			p.halted.Store(true)
			p.mu.Lock()
			if p.refused != nil && p.refused.stopped {
				p.refused.stopped = false
				r.stopped.Set(float64(r.nstopped.Add(-1)))
			}
			out[p.id] = Removed{Position: p.acked, Runs: slices.Clone(p.omap.Runs())}
			p.mu.Unlock()
		}
		delete(r.parts, t)
	}
	r.mu.Unlock()
	if len(rm) > 0 {
		r.opts.Source.RemoveConsumePartitions(rm)
		names := make([]string, 0, len(rm))
		for t := range rm {
			names = append(names, t)
		}
		r.opts.Source.PurgeTopicsFromConsuming(names...)
	}
	r.updateGauges()
	return out
}

// Has reports whether the partition is replicated.
func (r *Replicator) Has(topic string, p int32) bool { return r.lookup(topic, p) != nil }

// TopicID returns the source topic ID the replicated partitions of topic
// belong to ("" if unknown), and false if no partition of it is
// replicated.
func (r *Replicator) TopicID(topic string) (string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, p := range r.parts[topic] {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.acked.TopicID, true
	}
	return "", false
}

// SetHighWatermark records a source partition's end offset, for lag.
func (r *Replicator) SetHighWatermark(topic string, p int32, end int64) {
	if part := r.lookup(topic, p); part != nil && end >= 0 {
		part.hwm.Store(end)
	}
}

// Positions returns the acknowledged position of every partition.
func (r *Replicator) Positions() map[progress.Partition]progress.Position {
	out := map[progress.Partition]progress.Position{}
	r.each(func(p *partition) {
		p.mu.Lock()
		out[p.id] = p.acked
		p.mu.Unlock()
	})
	return out
}

// Totals returns lifetime counters and the current lag.
func (r *Replicator) Totals() Totals {
	t := Totals{Records: r.records.Load(), Bytes: r.bytes.Load()}
	r.each(func(p *partition) {
		t.Partitions++
		p.mu.Lock()
		next, failed := p.acked.SourceNext, p.failed
		if ref := p.refused; ref != nil && ref.stopped {
			t.Stopped = append(t.Stopped, Stopped{Topic: p.id.Topic, Partition: p.id.Partition,
				Offset: ref.offset, Reason: ref.reason, Since: ref.since})
		}
		p.mu.Unlock()
		if hwm := p.hwm.Load(); hwm > next {
			t.Lag += hwm - next
		}
		if failed {
			t.Failing++
		}
	})
	sort.Slice(t.Stopped, func(i, j int) bool {
		a, b := t.Stopped[i], t.Stopped[j]
		return a.Topic < b.Topic || a.Topic == b.Topic && a.Partition < b.Partition
	})
	return t
}

func (r *Replicator) updateGauges() {
	n, topics := 0, 0
	r.mu.RLock()
	for _, ps := range r.parts {
		topics++
		n += len(ps)
	}
	r.mu.RUnlock()
	r.opts.Metrics.PartitionsActive.WithLabelValues(r.opts.Flow).Set(float64(n))
	r.opts.Metrics.TopicsReplicated.WithLabelValues(r.opts.Flow).Set(float64(topics))
}

// Run replicates until ctx is done. On return it has waited (up to a
// bound) for writes in flight and stored the final positions; it returns
// an error if it could not, so that the stop was not clean.
func (r *Replicator) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.progressLoop(ctx)
	}()
	r.pollLoop(ctx)
	wg.Wait()
	r.deadLetters.Wait()

	// Drain: give writes in flight a bounded time, then store how far the
	// target acknowledged. Whatever did not make it is re-sent next time.
	drainCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := r.opts.Target.Flush(drainCtx); err != nil {
		return fmt.Errorf("writes still in flight at shutdown: %w", err)
	}
	// Every write was answered: the positions stored now are exact, and
	// say so (Stopped), so that the next owner, a failover or a failback
	// knows the partitions stopped cleanly.
	if err := r.writeProgressOf(drainCtx, nil, true); err != nil {
		return fmt.Errorf("storing the final progress: %w", err)
	}
	return nil
}

const maxPollRecords = 50_000

func (r *Replicator) pollLoop(ctx context.Context) {
	fetchErrLog := retry.Throttle{Every: 10 * time.Second}
	for ctx.Err() == nil {
		anyFailed := r.recoverFailed(ctx)
		anyHeld := r.releaseHeld(ctx)
		var pollCtx context.Context
		var cancel context.CancelFunc
		switch {
		case anyHeld:
			pollCtx, cancel = context.WithTimeout(ctx, heldPoll)
		case anyFailed:
			pollCtx, cancel = context.WithTimeout(ctx, 250*time.Millisecond)
		default:
			pollCtx, cancel = context.WithCancel(ctx)
		}
		// A write that fails while the poll waits for source records
		// wakes it, so the partition is retried on a quiet source too.
		r.pollMu.Lock()
		r.wakePoll = cancel
		r.pollMu.Unlock()
		fetches := r.opts.Source.PollRecords(pollCtx, maxPollRecords)
		r.pollMu.Lock()
		r.wakePoll = nil
		r.pollMu.Unlock()
		cancel()
		if ctx.Err() != nil {
			return
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return
			}
			var loss *kgo.ErrDataLoss
			if errors.As(err, &loss) && r.sourceLostData(loss) {
				return
			}
			r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, fetchErrorKind(err)).Inc()
			err = r.opts.SourceAccess.Denied(kafka.OpRead, kafka.ResTopic, topic, err)
			if fetchErrLog.Allow() {
				msg := "fetching from source failed; retrying"
				if kafka.IsDenied(err) {
					msg = "fetching from source not authorized; retrying"
				}
				r.opts.Logger.Error(msg, "topic", topic, "partition", p, "err", err)
			}
		})
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			p := r.lookup(fp.Topic, fp.Partition)
			if p == nil {
				return
			}
			if fp.HighWatermark > 0 {
				p.hwm.Store(fp.HighWatermark)
			}
			if p.isFailed() || p.probing {
				if !p.paused {
					p.paused = true
					r.opts.Source.PauseFetchPartitions(map[string][]int32{fp.Topic: {fp.Partition}})
				}
				return
			}
			if p.halted.Load() || p.held != nil {
				return // a write failed meanwhile, or a record waits: fetched again from there
			}
			r.checkDeleted(p, fp)
			r.feed(ctx, p, fp.Records)
		})
	}
}

// feed hands records of partition p, fetched in order, to the producer,
// or passes over those it does not write. It stops at a record whose
// provenance mark is not decided yet and holds the partition there, with
// the records after it (see hold).
func (r *Replicator) feed(ctx context.Context, p *partition, recs []*kgo.Record) {
	for i, rec := range recs {
		if p.halted.Load() || p.probing {
			return // the rewind fetches the rest again
		}
		if rec.Offset < p.fedNext {
			r.sourceTruncated(p, rec.Offset)
			return
		}
		p.fedNext = rec.Offset + 1
		if rec.Attrs.IsControl() {
			r.skipControl(p, rec.Offset, rec.LeaderEpoch)
			continue
		}
		headers := rec.Headers
		if pv := r.opts.Provenance; pv != nil {
			d := pv.Decide(rec, p.target, rec.Offset < p.unprovenTo)
			if d.Wait {
				r.hold(p, recs[i:])
				return
			}
			if d.Drop != "" {
				r.dropped(p, rec, d.Drop)
				continue
			}
			if d.Foreign && rec.Offset >= p.foreignNext {
				p.foreignNext = rec.Offset + 1
				if d.Unproven {
					p.unproven.Inc()
				} else {
					p.foreign.Inc()
				}
			}
			headers = d.Headers
		}
		if p.probeOne {
			p.probeOne, p.probing = false, true
			p.mu.Lock()
			p.probeAt = rec.Offset
			p.mu.Unlock()
		}
		r.produce(ctx, p, rec, headers)
	}
}

// heldPoll is how often a poll loop with a record waiting for its
// provenance to be decided looks again.
const heldPoll = 50 * time.Millisecond

// hold pauses partition p at recs[0], whose provenance mark is not
// decided yet: it and the records after it, fetched already, wait until
// it is (see releaseHeld).
func (r *Replicator) hold(p *partition, recs []*kgo.Record) {
	if len(p.held) == 0 || p.held[0].Offset != recs[0].Offset {
		p.heldSince = time.Now()
	}
	p.held = recs
	p.fedNext = recs[0].Offset
	if !p.paused {
		p.paused = true
		r.opts.Source.PauseFetchPartitions(map[string][]int32{p.id.Topic: {p.id.Partition}})
	}
}

// releaseHeld feeds the records held at every partition whose waiting
// record's mark is now decided, or has waited ProofWait (its mark then
// counts as not proven, with one log line), and fetches the partition
// again after them. It reports whether a record still waits.
func (r *Replicator) releaseHeld(ctx context.Context) bool {
	pv := r.opts.Provenance
	if pv == nil {
		return false
	}
	var waiting bool
	r.each(func(p *partition) {
		if len(p.held) == 0 {
			return
		}
		recs := p.held
		rec := recs[0]
		if p.isFailed() {
			p.held = nil // the rewind fetches it again
			return
		}
		if pv.Decide(rec, p.target, false).Wait {
			if time.Since(p.heldSince) < r.opts.ProofWait {
				waiting = true
				return
			}
			p.unprovenTo = max(p.unprovenTo, rec.Offset+1)
			pv.Expire(rec)
			val, _ := headerValue(rec.Headers)
			r.opts.Logger.Warn("provenance mark of a source record neither proven nor disproven in time (the flow it names stored no progress that far); written as a record of the source: a duplicate if it was a copy; later marks of that flow on the partition are not waited for until its progress moves",
				"topic", p.id.Topic, "partition", p.id.Partition, "offset", rec.Offset,
				"mark", string(val), "waited", r.opts.ProofWait.String())
		}
		p.held = nil
		r.feed(ctx, p, recs)
		switch {
		case p.held != nil:
			waiting = true // held again, further on
		case p.isFailed() || p.halted.Load() || p.probing:
			// The rewind (or the probe's answer) fetches from there.
		default:
			r.opts.Source.SetOffsets(map[string]map[int32]kgo.EpochOffset{
				p.id.Topic: {p.id.Partition: {Epoch: -1, Offset: p.fedNext}},
			})
			p.paused = false
			r.opts.Source.ResumeFetchPartitions(map[string][]int32{p.id.Topic: {p.id.Partition}})
		}
	})
	return waiting
}

// dropped counts a record not written for its provenance and moves the
// partition's position past it exactly like past a transaction marker:
// the offset map covers it, and an offset at it translates to the next
// record written.
func (r *Replicator) dropped(p *partition, rec *kgo.Record, reason string) {
	if rec.Offset >= p.dropNext {
		p.dropNext = rec.Offset + 1
		if reason == metrics.DropLoop {
			p.loopDrops.Inc()
		} else {
			p.routedDrops.Inc()
		}
	}
	r.skipControl(p, rec.Offset, rec.LeaderEpoch)
}

// Provenance returns the flow's provenance decisions, or nil if it keeps
// no provenance (or r is nil).
func (r *Replicator) Provenance() *Provenance {
	if r == nil {
		return nil
	}
	return r.opts.Provenance
}

// checkDeleted reports the records the source deleted (retention,
// DeleteRecords) before they were copied: the partition's log start
// offset is past the next offset to copy. The consumer, fetching below
// the log start, resumes at it (ConsumeResetOffset); the records in
// between are gone. They are counted, logged with their exact range, and
// the position moves past them.
func (r *Replicator) checkDeleted(p *partition, fp kgo.FetchTopicPartition) {
	to := fp.LogStartOffset
	if len(fp.Records) > 0 {
		to = min(to, fp.Records[0].Offset)
	}
	if to <= p.fedNext {
		return
	}
	from := p.fedNext
	p.lost.Add(float64(to - from))
	r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, metrics.ErrRecordsLost).Inc()
	r.opts.Logger.Error("source deleted records before they were copied (retention or DeleteRecords); they are lost",
		"topic", p.id.Topic, "partition", p.id.Partition, "from", from, "to", to, "records", to-from)
	p.fedNext = to
	r.skipControl(p, to-1, -1) // the position moves past the gap like past a marker
}

// sourceLostData handles the consumer's report that a source partition
// lost records (a truncation it located or not). Where the consumer was
// reset below the position, the records from there arrive next and
// sourceTruncated copies them; it reports whether that is the case.
// Otherwise (reset to the same offset: records below it may have been
// replaced) it logs and counts here.
func (r *Replicator) sourceLostData(loss *kgo.ErrDataLoss) bool {
	p := r.lookup(loss.Topic, loss.Partition)
	if p == nil {
		return false
	}
	if loss.ResetTo < loss.ConsumedTo {
		return true
	}
	r.opts.Metrics.SourceTruncations.WithLabelValues(r.opts.Flow, p.id.Topic).Inc()
	r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, metrics.ErrSourceTrunc).Inc()
	r.opts.Logger.Error("source partition lost records (unclean leader election?); records below the position may have been replaced and are not copied again",
		"topic", p.id.Topic, "partition", p.id.Partition, "consumed_to", loss.ConsumedTo, "reset_to", loss.ResetTo)
	return true
}

// sourceTruncated handles a source record below the partition's position:
// the consumer only moves back by itself when the source partition was
// truncated (unclean leader election) and it resumed where the log
// diverged. The records from there are new data: the partition is rewound
// to them, once its writes in flight are answered, with its position and
// offset map cut back, and they are copied. One log line and a count say
// so.
func (r *Replicator) sourceTruncated(p *partition, offset int64) {
	p.dropNext = min(p.dropNext, offset) // new data: counted again
	p.mu.Lock()
	prev := p.fedNext
	p.halted.Store(true)
	if !p.failed || offset < p.failedAt {
		p.failedAt = offset
	}
	p.failed = true
	p.truncated = true
	p.retryAt = time.Now()
	p.mu.Unlock()
	r.opts.Metrics.SourceTruncations.WithLabelValues(r.opts.Flow, p.id.Topic).Inc()
	r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, metrics.ErrSourceTrunc).Inc()
	r.opts.Logger.Error("source partition truncated below the copied position (unclean leader election?); copying its records from the truncation point as new data",
		"topic", p.id.Topic, "partition", p.id.Partition, "from", offset, "position", prev)
}

// skipControl moves the partition's position past a transaction marker,
// which is not copied: at once if no write is in flight, else once the
// writes before it are acknowledged.
func (r *Replicator) skipControl(p *partition, offset int64, epoch int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failed {
		return // fetched again after the rewind
	}
	if p.inflight.Load() == 0 {
		if offset+1 > p.acked.SourceNext {
			p.acked.SourceNext, p.ackedEpoch = offset+1, epoch
		}
		return
	}
	if offset > p.pendingControl {
		p.pendingControl, p.pendingEpoch = offset, epoch
	}
}

func (p *partition) isFailed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

// errOrderGate fails a record, unsent, because an earlier record of its
// partition failed.
var errOrderGate = errors.New("an earlier record of the partition was not written")

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// gateWait bounds how long an orderGate waits for the answers of the
// earlier records of its partition; past it, the record is failed and
// written again after the rewind, which is safe.
const gateWait = time.Second

// orderGate is the context of a record handed to the producer. franz-go
// checks the context of a partition's first buffered record before it
// sends it as the first batch of the partition with nothing in flight
// ahead of it, and fails that batch and every later one of the partition,
// unsent, if the context is done. At that moment the target answered every
// earlier record of the partition; the gate is open only if each answer
// was a success. A batch sent behind batches in flight is in their
// idempotent sequence: if one of them fails, the broker refuses it too.
// Together, no record reaches the target after an earlier record of its
// partition failed, and the rewind writes the failed record first.
type orderGate struct {
	context.Context // the run's
	p               *partition
	after           int64 // records of the partition handed to the producer before this one
	closed          atomic.Bool
}

func (g *orderGate) Done() <-chan struct{} {
	if g.closed.Load() {
		return closedChan
	}
	if !g.p.mayFollow(g.after) {
		g.closed.Store(true)
		return closedChan
	}
	return g.Context.Done()
}

func (g *orderGate) Err() error {
	if err := g.Context.Err(); err != nil {
		return err
	}
	if g.closed.Load() {
		return errOrderGate
	}
	return nil
}

// mayFollow reports whether a record handed to the producer after the
// first n of the partition may be sent: every one of those was answered,
// none failed. Answers are delivered shortly after the target gave them;
// it waits for them up to gateWait.
func (p *partition) mayFollow(n int64) bool {
	var deadline time.Time
	for {
		if p.halted.Load() {
			return false
		}
		if p.settled.Load() >= n {
			return !p.halted.Load()
		}
		now := time.Now()
		if deadline.IsZero() {
			deadline = now.Add(gateWait)
		} else if now.After(deadline) {
			return false
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// produce writes source record in, with headers, to the partition's
// target.
func (r *Replicator) produce(ctx context.Context, p *partition, in *kgo.Record, headers []kgo.RecordHeader) {
	gate := &orderGate{Context: ctx, p: p, after: p.produced.Add(1) - 1}
	out := &kgo.Record{
		Topic:     p.target,
		Partition: in.Partition,
		Key:       in.Key,
		Value:     in.Value,
		Headers:   headers,
		Timestamp: in.Timestamp,
		Context:   gate,
	}
	src, epoch, ts := in.Offset, in.LeaderEpoch, in.Timestamp
	size := int64(len(in.Key) + len(in.Value))
	for _, h := range headers {
		size += int64(len(h.Key) + len(h.Value))
	}
	p.inflight.Add(1)
	r.notePending(p, src, ts, size)
	r.opts.Target.Produce(ctx, out, func(out *kgo.Record, err error) {
		r.acked(p, src, epoch, ts, size, out, err)
	})
}

func (r *Replicator) acked(p *partition, src int64, epoch int32, ts time.Time, size int64, out *kgo.Record, err error) {
	if err != nil {
		r.writeFailed(p, src, out, err)
		return
	}
	defer p.settled.Add(1)
	p.mu.Lock()
	if p.failed && src >= p.failedAt {
		// Written after an earlier record failed (the order gate prevents
		// it; a source truncation leaves it): the rewind writes it again.
		// Until then it is on the target past the position.
		p.doubt = true
		p.inflight.Add(-1)
		p.mu.Unlock()
		p.duplicates.Inc()
		return
	}
	now := time.Now()
	var lostFrom, lostSrc, lostSrcEnd int64 = -1, -1, -1
	var lossReported bool
	var resumed, wake bool
	if src >= p.acked.SourceNext {
		if p.acked.TargetNext >= 0 && out.Offset < p.acked.TargetNext {
			// The target partition's offsets went back: it lost records
			// it had acknowledged (unclean leader election, or deleted
			// and re-created). What kmirror wrote there since is no
			// longer in its offset map.
			lostFrom = p.acked.TargetNext
			lostSrc, lostSrcEnd = lostSources(p.omap.Runs(), out.Offset), p.acked.SourceNext
			p.omap.Cut(-1, out.Offset)
			p.acked.IdleEnd = 0
			lossReported = !p.targetLossAt.IsZero() && now.Sub(p.targetLossAt) < targetLossWindow
			p.targetLossAt, p.targetBackAt = time.Time{}, now
			if lossReported {
				p.targetBackAt = time.Time{}
			}
		}
		p.acked.SourceNext, p.ackedEpoch = src+1, epoch
		p.acked.TargetNext = out.Offset + 1
		p.omap.Add(src, out.Offset, now.UnixMilli())
		// Whatever a write in doubt left on the target is before this
		// one: the position is exact again.
		p.doubt = false
	}
	if p.probeAt == src {
		// A record refused with others was accepted alone: go on from the
		// next one, fetched again, alone too up to the last record that
		// was refused.
		p.probeAt = -1
		p.probe = src < p.probeEnd
		p.failed, p.failedAt, p.retryAt = true, src+1, now
		wake = true
		if p.refused != nil {
			if p.refused.stopped {
				r.stopped.Set(float64(r.nstopped.Add(-1)))
			}
			p.refused = nil
			resumed = true
		}
	}
	if p.inflight.Add(-1) == 0 && !p.failed && p.pendingControl >= p.acked.SourceNext {
		// Every record before the transaction marker is on the target.
		p.acked.SourceNext, p.ackedEpoch = p.pendingControl+1, p.pendingEpoch
	}
	streak := p.failures
	p.failures = 0
	p.mu.Unlock()
	if wake {
		r.wake()
	}
	if streak > 0 {
		r.opts.Logger.Info("writes to target succeed again", "topic", p.id.Topic, "partition", p.id.Partition,
			"target_topic", p.target, "failed_attempts", streak)
	}
	if resumed {
		r.opts.Logger.Info("target accepted the refused record; partition goes on",
			"topic", p.id.Topic, "partition", p.id.Partition, "offset", src)
	}
	if lostFrom >= 0 {
		log := r.opts.Logger.Warn // the producer's report was the count and the error
		if !lossReported {
			log = r.opts.Logger.Error
			r.opts.Metrics.TargetDataLoss.WithLabelValues(r.opts.Flow, p.id.Topic).Inc()
			r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, metrics.ErrTargetDataLoss).Inc()
		}
		log("target partition lost records it had acknowledged: its offsets went back; the copies of source offsets from..to are gone from the target and are not copied again",
			"topic", p.id.Topic, "partition", p.id.Partition, "target_topic", p.target,
			"from", lostSrc, "to", lostSrcEnd, "expected_target_offset", lostFrom, "got", out.Offset, "source_offset", src)
	}
	p.records.Inc()
	p.bytes.Add(float64(size))
	r.records.Add(1)
	r.bytes.Add(size)
	r.latency.Observe(now.Sub(ts).Seconds())
}

// targetLossWindow is how long after the producer reported that a target
// partition lost records (TargetDataLoss) its offsets going back counts as
// the same loss.
const targetLossWindow = 2 * time.Minute

// TargetDataLoss handles the target producer's report that a target
// partition lost records it had acknowledged (its idempotent sequence
// check failed with the log start below the last acknowledged offset:
// unclean leader election on the target). It is the target client's
// kgo.ProducerOnDataLossDetected hook. The loss is counted and logged
// once here; the records written next land at offsets lower than
// expected, which acked reports with the source range of the lost copies
// without counting the loss again (whichever of the two comes first
// counts, within targetLossWindow).
func (r *Replicator) TargetDataLoss(topic string, part int32) {
	var hit []*partition
	r.each(func(p *partition) {
		if p.target == topic && p.id.Partition == part {
			hit = append(hit, p)
		}
	})
	now := time.Now()
	for _, p := range hit {
		p.mu.Lock()
		// The hook runs on a goroutine of its own: the records written
		// after the loss may have been acknowledged, and the loss
		// counted, already.
		counted := !p.targetBackAt.IsZero() && now.Sub(p.targetBackAt) < targetLossWindow
		p.targetLossAt, p.targetBackAt = now, time.Time{}
		if counted {
			p.targetLossAt = time.Time{}
		}
		expected := p.acked.TargetNext
		p.mu.Unlock()
		if counted {
			continue
		}
		r.opts.Metrics.TargetDataLoss.WithLabelValues(r.opts.Flow, p.id.Topic).Inc()
		r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, metrics.ErrTargetDataLoss).Inc()
		r.opts.Logger.Error("target partition lost records it had acknowledged (the producer's sequence check failed: unclean leader election on the target?)",
			"topic", p.id.Topic, "partition", p.id.Partition, "target_topic", p.target,
			"expected_target_offset", expected)
	}
}

// lostSources returns the first source offset whose copy is at target
// offset tgt or later in runs, or -1 if none is.
func lostSources(runs []offsets.Run, tgt int64) int64 {
	first := int64(-1)
	for _, run := range runs {
		if run.Target+run.Len <= tgt {
			continue
		}
		s := run.Source + max(0, tgt-run.Target)
		if first < 0 || s < first {
			first = s
		}
	}
	return first
}

// permanent reports whether an error refuses the record itself (too
// large, invalid), so that writing it again as it is cannot succeed until
// the target changes.
func permanent(kind string) bool {
	return kind == metrics.ErrRecordTooLarge || kind == metrics.ErrInvalidRecord
}

func (r *Replicator) writeFailed(p *partition, src int64, out *kgo.Record, err error) {
	shutdown := errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed)
	gated := errors.Is(err, errOrderGate)
	kind := produceErrorKind(err)
	err = r.opts.TargetAccess.Denied(kafka.OpWrite, kafka.ResTopic, p.target, err)
	now := time.Now()
	p.mu.Lock()
	p.halted.Store(true) // before settled moves: see orderGate
	if !shutdown && !gated && !permanent(kind) {
		// Not failed unsent, not refused by the target: it may be there.
		p.doubt = true
	}
	first := !p.failed
	var refusedNow, again bool
	if first {
		p.failed = true
		p.failedAt = src
		if !shutdown {
			p.failures++
		}
		p.retryAt = now.Add(writeBackoff(p.failures))
		if permanent(kind) && !gated {
			if p.probeAt == src {
				// Refused alone: the record itself is the cause.
				again = p.refused != nil && p.refused.offset == src
				if !again {
					p.refused = &refusal{offset: src, since: now}
				}
				p.refused.rec, p.refused.reason = out, err.Error()
				refusedNow = true
				if r.opts.DeadLetterTopic != "" {
					p.retryAt = now
				} else {
					p.retryAt = now.Add(r.opts.RefusedRetryInterval)
					if !p.refused.stopped {
						p.refused.stopped = true
						r.stopped.Set(float64(r.nstopped.Add(1)))
					}
				}
			}
			p.probe = true
		}
	} else if src < p.failedAt {
		p.failedAt = src
	}
	if permanent(kind) && !gated {
		p.probeEnd = max(p.probeEnd, src)
	}
	if p.probeAt == src {
		p.probeAt = -1
	}
	failures, retryAt := p.failures, p.retryAt
	p.inflight.Add(-1)
	p.mu.Unlock()
	p.settled.Add(1)
	if shutdown {
		return
	}
	r.wake()
	p.retried.Inc()
	if !first || gated {
		return
	}
	r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, kind).Inc()
	switch {
	case refusedNow && again:
		r.opts.Logger.Warn("target still refuses the record; partition stays stopped",
			"topic", p.id.Topic, "partition", p.id.Partition, "offset", src, "target_topic", p.target,
			"retry_in", time.Until(retryAt).Round(time.Second).String(), "reason", err)
	case refusedNow && r.opts.DeadLetterTopic != "":
		r.opts.Logger.Error("target refuses the record; writing it to the dead-letter topic",
			"topic", p.id.Topic, "partition", p.id.Partition, "offset", src, "target_topic", p.target,
			"dead_letter_topic", r.opts.DeadLetterTopic, "reason", err)
	case refusedNow:
		r.opts.Logger.Error("target refuses the record; partition stopped before it, nothing after it is written",
			"topic", p.id.Topic, "partition", p.id.Partition, "offset", src, "target_topic", p.target,
			"retry_in", time.Until(retryAt).Round(time.Second).String(), "reason", err)
	case permanent(kind):
		r.opts.Logger.Warn("write to target refused; retrying the first refused record alone",
			"topic", p.id.Topic, "partition", p.id.Partition, "target_topic", p.target,
			"source_offset", src, "kind", kind, "err", err)
	default:
		// One line per failure streak: the attempts after the first are
		// counted (kmirror_errors_total, kmirror_retried_records_total)
		// and logged at debug level; the end of the streak is logged once
		// (writes to target succeed again).
		level := slog.LevelError
		if failures > 1 {
			level = slog.LevelDebug
		}
		msg := "write to target failed; partition paused and will retry from the failed record"
		if kafka.IsDenied(err) {
			msg = "write to target not authorized; partition paused and will retry from the failed record"
		}
		r.opts.Logger.Log(context.Background(), level, msg,
			"topic", p.id.Topic, "partition", p.id.Partition, "target_topic", p.target,
			"source_offset", src, "kind", kind, "attempt", failures,
			"retry_in", time.Until(retryAt).Round(time.Millisecond).String(), "err", err)
	}
}

// wake ends the poll in progress, so that recoverFailed runs.
func (r *Replicator) wake() {
	r.pollMu.Lock()
	if r.wakePoll != nil {
		r.wakePoll()
	}
	r.pollMu.Unlock()
}

// recoverFailed rewinds every failed partition whose writes in flight have
// drained and whose backoff has passed, and starts the dead-letter write
// of refused records. It reports whether any partition is still failed.
func (r *Replicator) recoverFailed(ctx context.Context) bool {
	var waiting bool
	now := time.Now()
	r.each(func(p *partition) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.failed {
			return
		}
		if p.inflight.Load() > 0 || now.Before(p.retryAt) {
			waiting = true
			return
		}
		if ref := p.refused; ref != nil && ref.offset == p.failedAt && r.opts.DeadLetterTopic != "" {
			if !ref.writing {
				ref.writing = true
				r.deadLetters.Add(1)
				go r.deadLetter(ctx, p, ref)
			}
			waiting = true
			return
		}
		p.failed = false
		p.halted.Store(false)
		p.held = nil
		p.fedNext = p.failedAt
		p.pendingControl = -1
		p.probeOne, p.probing = p.probe, false
		if p.truncated {
			p.truncated = false
			p.acked.SourceNext, p.ackedEpoch = min(p.acked.SourceNext, p.failedAt), -1
			p.omap.Cut(p.failedAt, -1)
		}
		r.opts.Source.SetOffsets(map[string]map[int32]kgo.EpochOffset{
			p.id.Topic: {p.id.Partition: {Epoch: -1, Offset: p.failedAt}},
		})
		if p.paused {
			p.paused = false
			r.opts.Source.ResumeFetchPartitions(map[string][]int32{p.id.Topic: {p.id.Partition}})
		}
		if p.failures > 0 {
			r.opts.Logger.Debug("retrying partition", "topic", p.id.Topic, "partition", p.id.Partition,
				"from_offset", p.failedAt, "record_alone", p.probe)
		}
	})
	return waiting
}

// deadLetter writes a refused record to the dead-letter topic, with
// headers naming its source and the reason. Once the target acknowledged
// it, the partition's position moves past the record and it goes on;
// otherwise the partition stays stopped and tries again after
// RefusedRetryInterval.
func (r *Replicator) deadLetter(ctx context.Context, p *partition, ref *refusal) {
	defer r.deadLetters.Done()
	rec := &kgo.Record{
		Topic:     r.opts.DeadLetterTopic,
		Partition: 0,
		Key:       ref.rec.Key,
		Value:     ref.rec.Value,
		Timestamp: ref.rec.Timestamp,
		Headers: append(append([]kgo.RecordHeader(nil), ref.rec.Headers...),
			kgo.RecordHeader{Key: HeaderSourceTopic, Value: []byte(p.id.Topic)},
			kgo.RecordHeader{Key: HeaderSourcePartition, Value: []byte(strconv.Itoa(int(p.id.Partition)))},
			kgo.RecordHeader{Key: HeaderSourceOffset, Value: []byte(strconv.FormatInt(ref.offset, 10))},
			kgo.RecordHeader{Key: HeaderError, Value: []byte(ref.reason)}),
	}
	err := r.ensureDeadLetterTopic(ctx)
	if err == nil {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err = r.opts.Target.ProduceSync(wctx, rec).FirstErr()
		cancel()
	}
	now := time.Now()
	p.mu.Lock()
	ref.writing = false
	if err != nil {
		p.retryAt = now.Add(r.opts.RefusedRetryInterval)
		first := !ref.stopped
		if first {
			ref.stopped = true
			r.stopped.Set(float64(r.nstopped.Add(1)))
		}
		p.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, metrics.ErrDeadLetter).Inc()
		log := r.opts.Logger.Warn
		if first {
			log = r.opts.Logger.Error
		}
		log("writing the refused record to the dead-letter topic failed; partition stopped before it",
			"topic", p.id.Topic, "partition", p.id.Partition, "offset", ref.offset,
			"dead_letter_topic", r.opts.DeadLetterTopic, "retry_in", r.opts.RefusedRetryInterval.String(), "err", err)
		return
	}
	if ref.stopped {
		r.stopped.Set(float64(r.nstopped.Add(-1)))
	}
	p.refused, p.probe = nil, false
	if ref.offset+1 > p.acked.SourceNext {
		p.acked.SourceNext, p.ackedEpoch = ref.offset+1, -1
	}
	p.failedAt, p.retryAt, p.failures = ref.offset+1, now, 0
	p.mu.Unlock()
	p.deadLettered.Inc()
	r.opts.Logger.Warn("refused record written to the dead-letter topic; partition goes on",
		"topic", p.id.Topic, "partition", p.id.Partition, "offset", ref.offset, "dead_letter_topic", r.opts.DeadLetterTopic)
	r.wake()
}

// ensureDeadLetterTopic creates the dead-letter topic (one partition, the
// target's default replication factor) unless it is known to exist.
func (r *Replicator) ensureDeadLetterTopic(ctx context.Context) error {
	if r.deadLetterOK.Load() {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := kadm.NewClient(r.opts.Target).CreateTopic(cctx, 1, -1, nil, r.opts.DeadLetterTopic)
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("creating dead-letter topic %q: %w", r.opts.DeadLetterTopic, err)
	}
	r.deadLetterOK.Store(true)
	return nil
}

// writeBackoff paces the retries of a partition whose write failed.
func writeBackoff(failures int) time.Duration {
	return retry.Backoff{Base: 500 * time.Millisecond, Max: 30 * time.Second}.Delay(failures)
}

func (r *Replicator) progressLoop(ctx context.Context) {
	t := time.NewTicker(r.opts.ProgressInterval)
	defer t.Stop()
	errLog := retry.Throttle{Every: 10 * time.Second}
	var idleListed time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.storeNow:
		}
		if r.opts.Provenance != nil && time.Since(idleListed) >= idleEndInterval {
			idleListed = time.Now()
			r.noteIdleEnds(ctx)
		}
		if err := r.writeProgress(ctx); err != nil && ctx.Err() == nil {
			r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, metrics.ErrProgress).Inc()
			if errLog.Allow() {
				r.opts.Logger.Error("storing progress failed; retrying", "err", err)
			}
		}
	}
}

// idleEndInterval is how often a flow with provenance lists the end
// offsets of the target partitions it has no write in flight to (see
// noteIdleEnds).
const idleEndInterval = time.Second

// noteIdleEnds lists the end offsets of the target partitions that have
// no write of the flow in flight, and keeps each as the partition's
// IdleEnd when no write was handed to the producer meanwhile: the flow
// wrote nothing between its position and that end, so a flow reading the
// target need not wait for this one's next write to know that the records
// there (of the target's own producers) are not its copies.
func (r *Replicator) noteIdleEnds(ctx context.Context) {
	type cand struct {
		p        *partition
		produced int64
	}
	var cands []cand
	topics := map[string]bool{}
	r.each(func(p *partition) {
		n := p.produced.Load()
		if p.settled.Load() != n || p.inflight.Load() != 0 {
			return
		}
		p.mu.Lock()
		ok := !p.failed && !p.doubt && p.acked.TargetNext >= 0
		p.mu.Unlock()
		if ok {
			cands = append(cands, cand{p, n})
			topics[p.target] = true
		}
	})
	if len(cands) == 0 {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(r.opts.Target).ListEndOffsets(lctx, slices.Collect(maps.Keys(topics))...)
	if err != nil {
		return // best effort: readers wait for the next write instead
	}
	for _, c := range cands {
		end, ok := ends.Lookup(c.p.target, c.p.id.Partition)
		if !ok || end.Err != nil || c.p.produced.Load() != c.produced {
			continue
		}
		c.p.mu.Lock()
		if !c.p.failed && !c.p.doubt && end.Offset > max(c.p.acked.TargetNext, c.p.acked.IdleEnd) {
			c.p.acked.IdleEnd = end.Offset
		}
		c.p.mu.Unlock()
	}
}

// Defaults for the offset map's bounds.
const (
	DefaultOffsetMapRetention = 7 * 24 * time.Hour
	DefaultOffsetMapMaxRuns   = 50_000
)

// writeProgress stores the positions and offset-map runs that changed
// since the last write, applies the offset map's retention and refreshes
// the lag gauges. Every run changed is a record of its own, written before
// the position: a position never carries a run, so one that moves without
// a new run (past transaction markers) leaves the stored runs as they are,
// and the newest run covers up to it.
func (r *Replicator) writeProgress(ctx context.Context) error {
	return r.writeProgressOf(ctx, nil, false)
}

// writeProgressOf is writeProgress for the partitions keep selects (all
// if nil). Writes are serialised, so that an older position never lands
// after a newer one. stopping says the partitions stop here with every
// write answered: their positions are stored Stopped, unless a write of
// theirs failed in doubt.
func (r *Replicator) writeProgressOf(ctx context.Context, keep func(*partition) bool, stopping bool) error {
	r.progressMu.Lock()
	defer r.progressMu.Unlock()
	retention, maxRuns := r.opts.OffsetMapRetention, r.opts.OffsetMapMaxRuns
	if retention <= 0 {
		retention = DefaultOffsetMapRetention
	}
	if maxRuns <= 0 {
		maxRuns = DefaultOffsetMapMaxRuns
	}
	minMs := time.Now().Add(-retention).UnixMilli()
	var entries []progress.Entry
	var parts []*partition
	var marks []int
	var drops [][]offsets.Run
	var stops []bool
	r.each(func(p *partition) {
		if keep != nil && !keep(p) {
			return
		}
		p.mu.Lock()
		pos, persisted, storedStopped, persistedIdle := p.acked, p.persisted, p.storedStopped, p.persistedIdle
		pos.Stopped = stopping && !p.doubt
		pos.LeaderEpoch = nil
		if p.ackedEpoch >= 0 {
			e := p.ackedEpoch
			pos.LeaderEpoch = &e
		}
		p.omap.Advance(pos.SourceNext)
		cut := p.omap.TakeDropped()
		dropped := append(cut, p.omap.Trim(-1, minMs, maxRuns)...)
		changed, mark := p.omap.TakeChanged()
		p.mu.Unlock()
		if hwm := p.hwm.Load(); hwm >= 0 {
			p.lag.Set(float64(max(hwm-pos.SourceNext, 0)))
		}
		if pos.SourceNext == persisted && len(changed) == 0 && len(dropped) == 0 && pos.Stopped == storedStopped && pos.IdleEnd == persistedIdle {
			return
		}
		pos.Run = nil
		entries = append(entries, progress.Entry{Partition: p.id, Position: pos, Runs: changed, Dropped: dropped})
		parts = append(parts, p)
		marks = append(marks, mark)
		drops = append(drops, dropped)
		stops = append(stops, pos.Stopped)
	})
	if len(entries) == 0 {
		return nil
	}
	if err := r.opts.Progress.Write(ctx, entries); err != nil {
		for i, p := range parts {
			p.mu.Lock()
			p.omap.Restore(marks[i])
			// The runs dropped (by a cut or by retention) are deleted
			// from the store by the next write.
			p.omap.RestoreDropped(drops[i])
			p.mu.Unlock()
		}
		return err
	}
	r.opts.Metrics.ProgressWrites.WithLabelValues(r.opts.Flow).Add(float64(len(entries)))
	for i, p := range parts {
		p.mu.Lock()
		p.persisted = entries[i].SourceNext
		p.persistedIdle = entries[i].IdleEnd
		p.storedStopped = stops[i]
		p.mu.Unlock()
	}
	if !stopping {
		// Partitions that stop here are not read any more.
		r.startStored(parts)
	}
	return nil
}

// startStored starts reading the partitions among parts that waited for
// their start position to be stored (Assignment.StoreFirst).
func (r *Replicator) startStored(parts []*partition) {
	add := map[string]map[int32]kgo.Offset{}
	r.mu.Lock()
	for _, p := range parts {
		if p.start == nil {
			continue
		}
		if add[p.id.Topic] == nil {
			add[p.id.Topic] = map[int32]kgo.Offset{}
		}
		add[p.id.Topic][p.id.Partition] = *p.start
		p.start = nil
	}
	r.mu.Unlock()
	if len(add) > 0 {
		r.opts.Source.AddConsumePartitions(add)
	}
}

// Translate returns the target offset of the first replicated record at or
// after source offset src of a replicated partition, and false if the
// partition is not replicated here. An offset between the newest run and
// the position (past transaction markers) is exact; one in a hole of the
// map (runs an older version did not store) is rounded down.
func (r *Replicator) Translate(topic string, partition int32, src int64) (offsets.Result, bool) {
	p := r.lookup(topic, partition)
	if p == nil {
		return offsets.Result{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	next := p.acked.TargetNext
	if next < 0 {
		// Nothing written yet: the first record lands at the target's
		// end, which is unknown here; round down.
		return offsets.Result{Target: 0, Exact: false}, true
	}
	p.omap.Advance(p.acked.SourceNext)
	return p.omap.Translate(src, next), true
}
func produceErrorKind(err error) string {
	switch {
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
		return metrics.ErrRecordTooLarge
	case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed),
		errors.Is(err, kerr.TransactionalIDAuthorizationFailed), errors.Is(err, kerr.SaslAuthenticationFailed):
		return metrics.ErrAuthorization
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		return metrics.ErrUnknownTopic
	case errors.Is(err, kerr.InvalidRecord), errors.Is(err, kerr.CorruptMessage), errors.Is(err, kerr.InvalidTimestamp):
		return metrics.ErrInvalidRecord
	default:
		return metrics.ErrProduce
	}
}

func fetchErrorKind(err error) string {
	switch {
	case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.SaslAuthenticationFailed),
		errors.Is(err, kerr.GroupAuthorizationFailed):
		return metrics.ErrAuthorization
	case errors.Is(err, kerr.OffsetOutOfRange):
		return metrics.ErrOffsetReset
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		return metrics.ErrTopicDeleted
	default:
		return metrics.ErrFetch
	}
}
