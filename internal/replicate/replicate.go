// Package replicate is kmirror's data plane: it fetches records from the
// source cluster, writes them to the same partition of the target topic
// with key, value, headers and timestamp unchanged, and records progress
// only after the target acknowledged them.
//
// Ordering and safety rest on three rules:
//   - records of one source partition are produced in source order to one
//     target partition, and franz-go's idempotent producer acknowledges
//     them in that order;
//   - a partition's position advances only over acknowledged records, so
//     progress never runs ahead of the target;
//   - a failed write stops the partition, waits for its writes in flight,
//     and rewinds it to the first record that failed, after a backoff.
//     Nothing is skipped; records that were written after the failed one
//     are written again and counted as duplicates.
package replicate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/progress"
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
	Metrics            *metrics.Metrics
	Logger             *slog.Logger
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
}

// Totals are counters over the replicator's lifetime.
type Totals struct {
	Records    int64 // acknowledged by the target
	Bytes      int64
	Lag        int64 // sum over partitions of source end offset minus position
	Partitions int
	Failing    int // partitions waiting to retry a failed write
}

// Replicator copies records of its assigned partitions. Run drives it; Add
// and Remove may be called while it runs.
type Replicator struct {
	opts    Options
	latency prometheus.Observer

	mu    sync.RWMutex
	parts map[string]map[int32]*partition

	records, bytes atomic.Int64

	pollMu   sync.Mutex
	wakePoll context.CancelFunc // ends the poll in progress, if any
}

// New returns a Replicator.
func New(opts Options) *Replicator {
	return &Replicator{
		opts:    opts,
		latency: opts.Metrics.Latency.WithLabelValues(opts.Flow),
		parts:   map[string]map[int32]*partition{},
	}
}

// partition is the state of one replicated source partition.
type partition struct {
	id     progress.Partition
	target string

	// fedNext is the offset after the last record handed to the producer.
	// Only the poll loop touches it.
	fedNext int64
	paused  bool

	inflight atomic.Int64
	hwm      atomic.Int64 // source end offset last seen, -1 if unknown
	// halted mirrors failed for the per-record check of the poll loop, so
	// that no record is handed to the producer after a write failed.
	halted atomic.Bool

	mu        sync.Mutex
	acked     progress.Position // advanced only over acknowledged records
	omap      *offsets.Map      // source→target offsets of acknowledged records
	persisted int64             // acked.SourceNext last written to progress
	failed    bool
	failedAt  int64 // first source offset whose write failed
	// pendingControl is the offset of the newest transaction marker seen
	// while writes were in flight, or -1; the position moves past it once
	// they are acknowledged.
	pendingControl int64
	failures       int // consecutive failed attempts, for the backoff
	retryAt        time.Time

	records, bytes, retried, duplicates prometheus.Counter
	lag                                 prometheus.Gauge
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
	r.mu.Lock()
	for _, a := range as {
		if r.parts[a.Source.Topic][a.Source.Partition] != nil {
			continue
		}
		p := &partition{
			id:             a.Source,
			target:         a.TargetTopic,
			fedNext:        a.Start.SourceNext,
			acked:          a.Start,
			omap:           offsets.NewMap(a.Runs),
			persisted:      -1,
			pendingControl: -1,
			records:        m.ReplicatedRecords.WithLabelValues(r.opts.Flow, a.Source.Topic),
			bytes:          m.ReplicatedBytes.WithLabelValues(r.opts.Flow, a.Source.Topic),
			retried:        m.Retried.WithLabelValues(r.opts.Flow, a.Source.Topic),
			duplicates:     m.Duplicates.WithLabelValues(r.opts.Flow, a.Source.Topic),
			lag:            m.PartitionLag.WithLabelValues(r.opts.Flow, a.Source.Topic, strconv.Itoa(int(a.Source.Partition))),
		}
		p.hwm.Store(-1)
		p.omap.Start(a.Start.SourceNext)
		if r.parts[a.Source.Topic] == nil {
			r.parts[a.Source.Topic] = map[int32]*partition{}
		}
		r.parts[a.Source.Topic][a.Source.Partition] = p
		if add[a.Source.Topic] == nil {
			add[a.Source.Topic] = map[int32]kgo.Offset{}
		}
		add[a.Source.Topic][a.Source.Partition] = kgo.NewOffset().At(a.Start.SourceNext)
	}
	r.mu.Unlock()
	if len(add) > 0 {
		r.opts.Source.AddConsumePartitions(add)
		for topic, ps := range add {
			r.opts.Logger.Info("replicating topic", "topic", topic, "new_partitions", len(ps))
		}
	}
	r.updateGauges()
}

// Remove stops replicating every partition of the given source topics.
func (r *Replicator) Remove(topics []string) {
	rm := map[string][]int32{}
	r.mu.Lock()
	for _, t := range topics {
		for id := range r.parts[t] {
			rm[t] = append(rm[t], id)
			r.opts.Metrics.PartitionLag.DeleteLabelValues(r.opts.Flow, t, strconv.Itoa(int(id)))
		}
		delete(r.parts, t)
	}
	r.mu.Unlock()
	if len(rm) > 0 {
		r.opts.Source.RemoveConsumePartitions(rm)
	}
	r.updateGauges()
}

// Has reports whether the partition is replicated.
func (r *Replicator) Has(topic string, p int32) bool { return r.lookup(topic, p) != nil }

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
		p.mu.Unlock()
		if hwm := p.hwm.Load(); hwm > next {
			t.Lag += hwm - next
		}
		if failed {
			t.Failing++
		}
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

	// Drain: give writes in flight a bounded time, then store how far the
	// target acknowledged. Whatever did not make it is re-sent next time.
	drainCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := r.opts.Target.Flush(drainCtx); err != nil {
		return fmt.Errorf("writes still in flight at shutdown: %w", err)
	}
	if err := r.writeProgress(drainCtx); err != nil {
		return fmt.Errorf("storing the final progress: %w", err)
	}
	return nil
}

const maxPollRecords = 50_000

func (r *Replicator) pollLoop(ctx context.Context) {
	var fetchErrLogged time.Time
	for ctx.Err() == nil {
		anyFailed := r.recoverFailed()
		var pollCtx context.Context
		var cancel context.CancelFunc
		if anyFailed {
			pollCtx, cancel = context.WithTimeout(ctx, 250*time.Millisecond)
		} else {
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
			r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, fetchErrorKind(err)).Inc()
			if time.Since(fetchErrLogged) > 10*time.Second {
				fetchErrLogged = time.Now()
				r.opts.Logger.Error("fetching from source failed; retrying", "topic", topic, "partition", p, "err", err)
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
			if p.isFailed() {
				if !p.paused {
					p.paused = true
					r.opts.Source.PauseFetchPartitions(map[string][]int32{fp.Topic: {fp.Partition}})
				}
				return
			}
			for _, rec := range fp.Records {
				if p.halted.Load() {
					break // a write failed meanwhile; the rewind fetches the rest again
				}
				if rec.Offset < p.fedNext {
					r.offsetsWentBack(p, rec.Offset)
					continue
				}
				p.fedNext = rec.Offset + 1
				if rec.Attrs.IsControl() {
					r.skipControl(p, rec.Offset)
					continue
				}
				r.produce(ctx, p, rec)
			}
		})
	}
}

// skipControl moves the partition's position past a transaction marker,
// which is not copied: at once if no write is in flight, else once the
// writes before it are acknowledged.
func (r *Replicator) skipControl(p *partition, offset int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failed {
		return // fetched again after the rewind
	}
	if p.inflight.Load() == 0 {
		p.acked.SourceNext = max(p.acked.SourceNext, offset+1)
		return
	}
	p.pendingControl = max(p.pendingControl, offset)
}

// offsetsWentBack reports a source record below the partition's position.
// The consumer only moves forward by itself, so this means the source
// partition was truncated or recreated under the same name; those records
// are not copied, and that is counted and logged.
func (r *Replicator) offsetsWentBack(p *partition, offset int64) {
	r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, metrics.ErrOffsetReset).Inc()
	r.opts.Logger.Error("source returned a record below the replicated position (topic truncated or recreated?); not copied",
		"topic", p.id.Topic, "partition", p.id.Partition, "offset", offset, "position", p.fedNext)
}

func (p *partition) isFailed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

func (r *Replicator) produce(ctx context.Context, p *partition, in *kgo.Record) {
	out := &kgo.Record{
		Topic:     p.target,
		Partition: in.Partition,
		Key:       in.Key,
		Value:     in.Value,
		Headers:   in.Headers,
		Timestamp: in.Timestamp,
	}
	src, ts := in.Offset, in.Timestamp
	size := int64(len(in.Key) + len(in.Value))
	for _, h := range in.Headers {
		size += int64(len(h.Key) + len(h.Value))
	}
	p.inflight.Add(1)
	r.opts.Target.Produce(ctx, out, func(out *kgo.Record, err error) {
		r.acked(p, src, ts, size, out, err)
	})
}

func (r *Replicator) acked(p *partition, src int64, ts time.Time, size int64, out *kgo.Record, err error) {
	if err != nil {
		r.writeFailed(p, src, err)
		return
	}
	p.mu.Lock()
	if p.failed && src >= p.failedAt {
		// Written after an earlier record failed: the rewind writes it
		// again.
		p.inflight.Add(-1)
		p.mu.Unlock()
		p.duplicates.Inc()
		return
	}
	now := time.Now()
	if src >= p.acked.SourceNext {
		p.acked.SourceNext = src + 1
		p.acked.TargetNext = out.Offset + 1
		p.omap.Add(src, out.Offset, now.UnixMilli())
	}
	if p.inflight.Add(-1) == 0 && !p.failed && p.pendingControl >= p.acked.SourceNext {
		// Every record before the transaction marker is on the target.
		p.acked.SourceNext = p.pendingControl + 1
	}
	p.failures = 0
	p.mu.Unlock()
	p.records.Inc()
	p.bytes.Add(float64(size))
	r.records.Add(1)
	r.bytes.Add(size)
	r.latency.Observe(now.Sub(ts).Seconds())
}

func (r *Replicator) writeFailed(p *partition, src int64, err error) {
	shutdown := errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed)
	p.mu.Lock()
	first := !p.failed
	if first {
		p.failed = true
		p.halted.Store(true)
		p.failedAt = src
		p.failures++
		p.retryAt = time.Now().Add(backoff(p.failures))
	} else if src < p.failedAt {
		p.failedAt = src
	}
	failures, retryAt := p.failures, p.retryAt
	p.inflight.Add(-1)
	p.mu.Unlock()
	if shutdown {
		return
	}
	r.pollMu.Lock()
	if r.wakePoll != nil {
		r.wakePoll()
	}
	r.pollMu.Unlock()
	p.retried.Inc()
	if first {
		kind := produceErrorKind(err)
		r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, kind).Inc()
		r.opts.Logger.Error("write to target failed; partition paused and will retry from the failed record",
			"topic", p.id.Topic, "partition", p.id.Partition, "target_topic", p.target,
			"source_offset", src, "kind", kind, "attempt", failures,
			"retry_in", time.Until(retryAt).Round(time.Millisecond).String(), "err", err)
	}
}

// recoverFailed rewinds every failed partition whose writes in flight have
// drained and whose backoff has passed. It reports whether any partition
// is still failed.
func (r *Replicator) recoverFailed() bool {
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
		p.failed = false
		p.halted.Store(false)
		p.fedNext = p.failedAt
		p.pendingControl = -1
		r.opts.Source.SetOffsets(map[string]map[int32]kgo.EpochOffset{
			p.id.Topic: {p.id.Partition: {Epoch: -1, Offset: p.failedAt}},
		})
		if p.paused {
			p.paused = false
			r.opts.Source.ResumeFetchPartitions(map[string][]int32{p.id.Topic: {p.id.Partition}})
		}
		r.opts.Logger.Info("retrying partition", "topic", p.id.Topic, "partition", p.id.Partition, "from_offset", p.failedAt)
	})
	return waiting
}

func backoff(failures int) time.Duration {
	d := 500 * time.Millisecond
	for i := 1; i < failures && d < 30*time.Second; i++ {
		d *= 2
	}
	return min(d, 30*time.Second)
}

func (r *Replicator) progressLoop(ctx context.Context) {
	t := time.NewTicker(r.opts.ProgressInterval)
	defer t.Stop()
	var errLogged time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := r.writeProgress(ctx); err != nil && ctx.Err() == nil {
			r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, metrics.ErrProgress).Inc()
			if time.Since(errLogged) > 10*time.Second {
				errLogged = time.Now()
				r.opts.Logger.Error("storing progress failed; retrying", "err", err)
			}
		}
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
	r.each(func(p *partition) {
		p.mu.Lock()
		pos, persisted := p.acked, p.persisted
		p.omap.Advance(pos.SourceNext)
		dropped := p.omap.Trim(-1, minMs, maxRuns)
		changed, mark := p.omap.TakeChanged()
		p.mu.Unlock()
		if hwm := p.hwm.Load(); hwm >= 0 {
			p.lag.Set(float64(max(hwm-pos.SourceNext, 0)))
		}
		if pos.SourceNext == persisted && len(changed) == 0 && len(dropped) == 0 {
			return
		}
		pos.Run = nil
		entries = append(entries, progress.Entry{Partition: p.id, Position: pos, Runs: changed, Dropped: dropped})
		parts = append(parts, p)
		marks = append(marks, mark)
	})
	if len(entries) == 0 {
		return nil
	}
	if err := r.opts.Progress.Write(ctx, entries); err != nil {
		for i, p := range parts {
			p.mu.Lock()
			p.omap.Restore(marks[i])
			p.mu.Unlock()
		}
		return err
	}
	r.opts.Metrics.ProgressWrites.WithLabelValues(r.opts.Flow).Add(float64(len(entries)))
	for i, p := range parts {
		p.mu.Lock()
		p.persisted = entries[i].SourceNext
		p.mu.Unlock()
	}
	return nil
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
