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
//     a transaction marker. Every record written carries the header;
//   - with transactions (Options.Transactions, exactly_once), records,
//     positions and offset-map runs are committed together in target
//     transactions that the brokers fence (see Transactions), and any
//     doubt aborts the transaction instead of leaving a duplicate.
package replicate

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/batchwrite"
	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/progress"
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
	// Transactions, if set, make the replicator exactly-once: see
	// Transactions.
	Transactions *Transactions
	// Forward, if set, passes record batches through: the source is read
	// as batches (Forward.Fetcher, in place of Source's consumer) and a
	// batch that need not change is written as it is (see forward.go).
	Forward *Forward
	Metrics *metrics.Metrics
	Logger  *slog.Logger
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
	// Fence are the producers of earlier owners that may still have
	// writes on their way to the target partition (at-least-once mode:
	// the stored writers of a position that is not Stopped); the first
	// copies written fence them (see fence.go). Own is this replicator's
	// target producer, if known: stored as a writer before anything is
	// written.
	Fence []Fence
	Own   *progress.Producer
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
	src     reader // Source's consumer, or Forward's fetcher
	latency prometheus.Observer
	stopped prometheus.Gauge

	// mu guards parts and the maps below. Lock order: a transaction's
	// mu (txn.go), then mu, then a partition's mu; records are never
	// handed to the producer while mu is held.
	mu    sync.RWMutex
	parts map[string]map[int32]*partition
	// undrained are partitions released with writes still unanswered,
	// until Abandon saw every one answered.
	undrained map[progress.Partition]*partition
	// again are partitions taken out to be compared with the target again
	// (ResumeAgain), with their positions and offset maps; againReady
	// says there are some.
	again      map[progress.Partition]Removed
	againReady chan struct{}
	// leaders are the target partitions' leaders for fence writes.
	leaders batchwrite.Leaders

	records, bytes atomic.Int64
	nstopped       atomic.Int64

	pollMu   sync.Mutex
	wakePoll context.CancelFunc // ends the poll in progress, if any

	// storeNow asks the progress loop for a write at once: partitions
	// wait for their start position to be stored (Assignment.StoreFirst).
	storeNow chan struct{}

	progressMu sync.Mutex // serialises progress writes
	// progressEntries counts the entries stored (under progressMu).
	progressEntries int64

	// txn is the state of the transactions of an exactly-once
	// replicator; nil without Options.Transactions.
	txn *txnState

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

		againReady: make(chan struct{}, 1),
	}
	r.stopped.Set(0)
	r.src = consumerReader{opts.Source}
	if opts.Forward != nil {
		r.src = batchReader{opts.Forward.Fetcher}
	}
	if opts.Transactions != nil {
		r.txn = &txnState{opts: opts.Transactions, full: make(chan struct{}, 1)}
	}
	return r
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
	// A partition this replicator had before may still be paused in the
	// source client (a failed write pauses it; taking it out does not
	// resume it): every partition added is resumed.
	resume := map[string][]int32{}
	waiting := false
	r.mu.Lock()
	for _, a := range as {
		if r.parts[a.Source.Topic][a.Source.Partition] != nil {
			continue
		}
		resume[a.Source.Topic] = append(resume[a.Source.Topic], a.Source.Partition)
		storeFirst := a.StoreFirst || a.Start.Stopped
		p := &partition{
			id:             a.Source,
			target:         a.TargetTopic,
			fedNext:        a.Start.SourceNext,
			acked:          a.Start,
			committed:      a.Start,
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
		p.acked.Writers = nil
		if r.txn == nil {
			// Exactly-once: the brokers fence through the transactional
			// IDs instead.
			fences := slices.DeleteFunc(slices.Clone(a.Fence), func(f Fence) bool {
				return a.Own != nil && f.Producer.ID == a.Own.ID ||
					r.opts.Forward != nil && f.Producer.ID == r.opts.Forward.Producer.ID
			})
			p.fences = fenceSteps(fences)
			p.unfenced.Store(len(p.fences) > 0)
			for _, f := range fences {
				p.acked.Writers = append(p.acked.Writers, f.Producer)
			}
			if a.Own != nil {
				p.acked.Writers = append(p.acked.Writers, *a.Own)
				// A write of this owner that stalls before its first
				// acknowledgement is fenced by the next one too.
				storeFirst = storeFirst || !slices.Contains(a.Start.Writers, *a.Own)
			}
			if fw := r.opts.Forward; fw != nil && !slices.Contains(p.acked.Writers, fw.Producer) {
				// So is the batch writer's.
				p.acked.Writers = append(p.acked.Writers, fw.Producer)
				storeFirst = storeFirst || !slices.Contains(a.Start.Writers, fw.Producer)
			}
		}
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
	if len(resume) > 0 {
		r.src.resume(resume)
	}
	if waiting {
		select {
		case r.storeNow <- struct{}{}:
		default:
		}
	}
	if len(add) > 0 {
		r.src.add(add)
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
		r.src.remove(rm, true)
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
// an error if it could not, so that the stop was not clean. An
// exactly-once replicator also returns, with an error wrapping
// ErrTransactionAborted, as soon as a transaction was aborted.
func (r *Replicator) Run(ctx context.Context) error {
	if r.txn != nil {
		return r.runTransactional(ctx)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.progressLoop(ctx)
	}()
	if r.opts.Forward != nil {
		r.pollBatches(ctx)
	} else {
		r.pollLoop(ctx)
	}
	wg.Wait()
	r.deadLetters.Wait()

	// Drain: give writes in flight a bounded time, then store how far the
	// target acknowledged. Whatever did not make it is re-sent next time.
	drainCtx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	if err := r.opts.Target.Flush(drainCtx); err != nil {
		return fmt.Errorf("writes still in flight at shutdown: %w", err)
	}
	if r.opts.Forward != nil {
		if err := r.waitBatchesAnswered(drainCtx); err != nil {
			return fmt.Errorf("record batches still in flight at shutdown: %w", err)
		}
	}
	// Every write was answered: the positions stored now are exact, and
	// say so (Stopped), so that the next owner, a failover or a failback
	// knows the partitions stopped cleanly.
	if err := r.writeProgressOf(drainCtx, nil, all); err != nil {
		return fmt.Errorf("storing the final progress: %w", err)
	}
	return nil
}

// drainTimeout bounds the final flush and store of a stopping run.
const drainTimeout = 15 * time.Second

// runTransactional is Run with transactions: the commit loop takes the
// place of the progress loop, and the last transaction stores every
// position Stopped.
func (r *Replicator) runTransactional(ctx context.Context) error {
	if err := r.opts.Target.BeginTransaction(); err != nil {
		return fmt.Errorf("%w: beginning a transaction: %w", ErrTransactionAborted, err)
	}
	r.txn.began = time.Now()
	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := r.txnLoop(pollCtx); err != nil {
			stopPoll()
		}
	}()
	r.pollLoop(pollCtx)
	wg.Wait()
	r.deadLetters.Wait()
	if errp := r.txn.failed.Load(); errp != nil {
		return *errp
	}
	drainCtx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	return r.commit(drainCtx, all)
}

// all selects every partition.
func all(*partition) bool { return true }
