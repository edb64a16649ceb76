package provenance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/retry"
)

// Verdict is what a Ledger knows of a record that names a writer.
type Verdict int8

const (
	// Unknown: not yet known. The writer has not stored progress past the
	// record's offset, or its progress could not be read yet.
	Unknown Verdict = iota
	// Copy: the writer wrote the record.
	Copy
	// NotCopy: the writer did not write the record. Its stored progress
	// passed the record's offset without a copy there, it stopped cleanly
	// (or was failed over) before that offset, or no flow of that name
	// stores progress on the cluster.
	NotCopy
	// Stale: unknown, and a wait for the writer's progress on this
	// partition already expired (see Expire) with its progress where it
	// still is: not worth waiting for again.
	Stale
)

func (v Verdict) String() string {
	switch v {
	case Copy:
		return "copy"
	case NotCopy:
		return "not a copy"
	case Stale:
		return "unknown (stale)"
	}
	return "unknown"
}

// flowName is what a flow's name may hold (see config.Flow.Name): a mark
// naming anything else names no flow.
var flowName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)

// maxWriters bounds the writers a Ledger tracks, so that marks naming
// many flows cannot make it read without end: a mark naming a writer past
// the bound is not proven.
const maxWriters = 10_000

// recheckMissing is how long a writer whose progress topic was not found
// stays not found before the Ledger looks again.
const recheckMissing = 10 * time.Second

// LedgerOptions configure a Ledger.
type LedgerOptions struct {
	// Client is connected to the cluster whose records are checked. The
	// Ledger consumes the progress topics with it (direct partitions,
	// read_committed); nothing else may consume with it.
	Client *kgo.Client
	// ProgressTopic returns the progress topic of the flow named flow.
	ProgressTopic func(flow string) string
	// Live, if set, returns the writer of that name running in the same
	// process and writing into the cluster, or nil: its acknowledged
	// writes prove or disprove records before it stores its progress.
	Live func(writer string) LiveWriter
	// OnError is called for each failure to read a writer's progress,
	// with the writer; may be nil.
	OnError func(writer string, err error)
	Logger  *slog.Logger
}

// Ledger reads, from one cluster, the progress topics of the flows that
// write into it, as the marks of the records it is asked about name them,
// and says which records those flows wrote. Run must run for it to learn
// anything.
type Ledger struct {
	opts LedgerOptions
	adm  *kadm.Client

	mu      sync.RWMutex
	writers map[string]*writer
	topics  map[string]*writer // by progress topic
	changed chan struct{}      // closed, and replaced, when state advances
	pending chan struct{}      // wakes Run: a writer was added
}

// writer is what a Ledger knows of one flow writing into the cluster.
type writer struct {
	name, topic string
	// state: unread until Run looked for the topic; missing if it does
	// not exist; reading once it is consumed.
	state     writerState
	checkedAt time.Time
	err       error
	parts     map[progress.Partition]*copies
	// failedOver holds, while the writer is failed over, the end offsets
	// its failover recorded, by topic (on this cluster) and partition: the
	// writer does not write past them.
	failedOver map[string]map[int32]int64
}

type writerState int8

const (
	unread writerState = iota
	missing
	reading
)

// copies is a writer's stored progress of one of its source partitions.
type copies struct {
	// runs holds the runs of its offset map by first source offset, which
	// orders them by target offset too (a map only grows in both).
	runs []offsets.Run
	// next is the target offset after the last record the writer wrote,
	// as its newest stored position says, or -1.
	next int64
	// idleEnd is the newest position's IdleEnd: the writer wrote nothing
	// in [next, idleEnd).
	idleEnd int64
	// stopped says that position is Stopped: the writer stopped cleanly
	// there and wrote nothing past it.
	stopped bool
	// expired says a wait for the writer's progress expired while next
	// was expiredAt.
	expired   bool
	expiredAt int64
}

// LiveWriter is a flow running in the same process, writing into the
// cluster a Ledger checks.
type LiveWriter interface {
	// Proof says whether the flow wrote the record at offset of
	// partition of topic, copied from sourceTopic, as far as its
	// acknowledged writes in memory tell: Copy (with the source offset),
	// NotCopy, or Unknown.
	Proof(topic, sourceTopic string, partition int32, offset int64) (Verdict, int64)
}

// NewLedger returns a Ledger.
func NewLedger(opts LedgerOptions) *Ledger {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Ledger{
		opts:    opts,
		adm:     kadm.NewClient(opts.Client),
		writers: map[string]*writer{},
		topics:  map[string]*writer{},
		changed: make(chan struct{}),
		pending: make(chan struct{}, 1),
	}
}

// Check says whether flow writer wrote the record at offset of partition
// of the cluster's topic, where it copied it from sourceTopic on its
// source (the same name unless the writer renames topics). With Copy it
// also returns that record's source offset. It never blocks; a writer
// named for the first time is looked for in the background (Unknown
// meanwhile).
func (l *Ledger) Check(writerName, topic, sourceTopic string, partition int32, offset int64) (Verdict, int64) {
	if !flowName.MatchString(writerName) {
		return NotCopy, -1
	}
	if l.opts.Live != nil {
		if lw := l.opts.Live(writerName); lw != nil {
			if v, src := lw.Proof(topic, sourceTopic, partition, offset); v == Copy || v == NotCopy {
				return v, src
			}
		}
	}
	l.mu.RLock()
	w := l.writers[writerName]
	if w == nil {
		l.mu.RUnlock()
		return l.addWriter(writerName), -1
	}
	defer l.mu.RUnlock()
	switch w.state {
	case unread:
		return Unknown, -1
	case missing:
		if time.Since(w.checkedAt) > recheckMissing {
			l.wake()
		}
		return NotCopy, -1
	}
	c := w.parts[progress.Partition{Topic: sourceTopic, Partition: partition}]
	if c != nil {
		if src, ok := c.lookup(offset); ok {
			return Copy, src
		}
		if c.next > offset || c.idleEnd > offset || (c.stopped && c.next >= 0) {
			return NotCopy, -1
		}
	}
	if end, ok := w.failedOver[topic][partition]; ok && offset >= end {
		return NotCopy, -1
	}
	if c != nil && c.expired && c.expiredAt == max(c.next, c.idleEnd) {
		return Stale, -1
	}
	return Unknown, -1
}

// Expire records that a wait for writer's progress on partition of
// sourceTopic ran out: until that progress moves, Check answers Stale
// rather than Unknown there.
func (l *Ledger) Expire(writerName, sourceTopic string, partition int32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.writers[writerName]
	if w == nil {
		return
	}
	id := progress.Partition{Topic: sourceTopic, Partition: partition}
	c := w.parts[id]
	if c == nil {
		c = &copies{next: -1}
		w.parts[id] = c
	}
	c.expired, c.expiredAt = true, max(c.next, c.idleEnd)
}

// Await is Check, waiting up to wait for a verdict other than Unknown
// or Stale.
func (l *Ledger) Await(ctx context.Context, wait time.Duration, writerName, topic, sourceTopic string, partition int32, offset int64) (Verdict, int64) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		ch := l.Changed()
		v, src := l.Check(writerName, topic, sourceTopic, partition, offset)
		if v != Unknown && v != Stale {
			return v, src
		}
		select {
		case <-ch:
		case <-deadline.C:
			return v, -1
		case <-ctx.Done():
			return v, -1
		}
	}
}

// Changed returns a channel closed the next time the Ledger learns
// something.
func (l *Ledger) Changed() <-chan struct{} {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.changed
}

func (l *Ledger) addWriter(name string) Verdict {
	l.mu.Lock()
	defer l.mu.Unlock()
	if w := l.writers[name]; w != nil {
		return Unknown // added meanwhile; asked again soon
	}
	if len(l.writers) >= maxWriters {
		return NotCopy
	}
	w := &writer{name: name, topic: l.opts.ProgressTopic(name), parts: map[progress.Partition]*copies{}}
	l.writers[name] = w
	l.topics[w.topic] = w
	l.wake()
	return Unknown
}

func (l *Ledger) wake() {
	select {
	case l.pending <- struct{}{}:
	default:
	}
}

// advanced wakes everyone waiting on Changed. l.mu must be held.
func (l *Ledger) advanced() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// Run reads the writers' progress topics until ctx ends.
func (l *Ledger) Run(ctx context.Context) {
	errLog := retry.Throttle{Every: 30 * time.Second}
	for ctx.Err() == nil {
		l.look(ctx, errLog.Allow)
		pollCtx, cancel := context.WithTimeout(ctx, time.Second)
		go func() {
			select {
			case <-l.pending:
				cancel() // look at it on the next round
			case <-pollCtx.Done():
			}
		}()
		fetches := l.opts.Client.PollFetches(pollCtx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		l.apply(fetches, errLog.Allow)
	}
}

// look finds the progress topics of writers not looked for yet (and
// looks again for those not found a while ago), and starts reading those
// that exist.
func (l *Ledger) look(ctx context.Context, logIt func() bool) {
	l.mu.RLock()
	var names []string
	for _, w := range l.writers {
		if w.state == unread || (w.state == missing && time.Since(w.checkedAt) > recheckMissing) {
			names = append(names, w.topic)
		}
	}
	l.mu.RUnlock()
	if len(names) == 0 {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	listed, err := l.adm.ListTopics(lctx, names...)
	if err != nil {
		l.failed(names, fmt.Errorf("looking for progress topics: %w", err), logIt)
		return
	}
	add := map[string]map[int32]kgo.Offset{}
	l.mu.Lock()
	now := time.Now()
	changed := false
	for _, topic := range names {
		w := l.topics[topic]
		d, ok := listed[topic]
		switch {
		case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition):
			if w.state != missing {
				changed = true
			}
			w.state, w.checkedAt, w.err = missing, now, nil
		case d.Err != nil:
			w.err = d.Err
		default:
			w.state, w.checkedAt, w.err = reading, now, nil
			add[topic] = map[int32]kgo.Offset{0: kgo.NewOffset().AtStart()}
		}
	}
	if changed {
		l.advanced()
	}
	l.mu.Unlock()
	if len(add) > 0 {
		l.opts.Client.AddConsumePartitions(add)
	}
	for _, topic := range names {
		l.mu.RLock()
		w := l.topics[topic]
		err := w.err
		l.mu.RUnlock()
		if err != nil {
			l.report(w.name, fmt.Errorf("progress topic %q: %w", topic, err), logIt)
		}
	}
}

func (l *Ledger) failed(topics []string, err error, logIt func() bool) {
	l.mu.Lock()
	var names []string
	for _, t := range topics {
		if w := l.topics[t]; w != nil {
			w.err = err
			names = append(names, w.name)
		}
	}
	l.mu.Unlock()
	for _, n := range names {
		l.report(n, err, logIt)
	}
}

func (l *Ledger) report(writerName string, err error, logIt func() bool) {
	if l.opts.OnError != nil {
		l.opts.OnError(writerName, err)
	}
	if logIt() {
		l.opts.Logger.Error("cannot read the progress of a flow that writes into the source, which proves which records are its copies; records it may have written wait, and are copied after a while if still unproven",
			"writer", writerName, "err", err)
	}
}

// apply takes in what was read.
func (l *Ledger) apply(fetches kgo.Fetches, logIt func() bool) {
	fetches.EachError(func(topic string, _ int32, err error) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return
		}
		l.mu.Lock()
		w := l.topics[topic]
		if w != nil {
			w.err = err
		}
		l.mu.Unlock()
		if w != nil {
			l.report(w.name, fmt.Errorf("reading progress topic %q: %w", topic, err), logIt)
		}
	})
	if fetches.NumRecords() == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fetches.EachRecord(func(r *kgo.Record) {
		w := l.topics[r.Topic]
		if w == nil || r.Attrs.IsControl() {
			return
		}
		w.err = nil
		it, ok := progress.Decode(r.Key, r.Value)
		if !ok {
			return
		}
		if it.IsFailover {
			w.failedOver = nil
			if !it.Deleted {
				w.failedOver = it.Failover.TargetEnds
			}
			return
		}
		c := w.parts[it.Partition]
		if c == nil {
			c = &copies{next: -1}
			w.parts[it.Partition] = c
		}
		switch {
		case it.IsRun && it.Deleted:
			c.remove(it.RunStart)
		case it.IsRun:
			c.put(it.Run)
		case it.Deleted:
			c.next, c.idleEnd, c.stopped = -1, 0, false
		default:
			c.next, c.idleEnd, c.stopped = it.Position.TargetNext, it.Position.IdleEnd, it.Position.Stopped
			if it.Position.Run != nil { // an older version's position
				c.put(*it.Position.Run)
			}
		}
	})
	l.advanced()
}

// lookup returns the source offset of the copy at target offset tgt.
func (c *copies) lookup(tgt int64) (int64, bool) {
	i := sort.Search(len(c.runs), func(i int) bool { return c.runs[i].TargetEnd() > tgt })
	if i < len(c.runs) && c.runs[i].Target <= tgt {
		r := c.runs[i]
		return r.Source + (tgt - r.Target), true
	}
	return -1, false
}

// put adds run, or replaces the run that starts at the same source
// offset.
func (c *copies) put(run offsets.Run) {
	run = run.Saved()
	i := sort.Search(len(c.runs), func(i int) bool { return c.runs[i].Source >= run.Source })
	if i < len(c.runs) && c.runs[i].Source == run.Source {
		c.runs[i] = run
		return
	}
	c.runs = append(c.runs, offsets.Run{})
	copy(c.runs[i+1:], c.runs[i:])
	c.runs[i] = run
}

func (c *copies) remove(start int64) {
	i := sort.Search(len(c.runs), func(i int) bool { return c.runs[i].Source >= start })
	if i < len(c.runs) && c.runs[i].Source == start {
		c.runs = append(c.runs[:i], c.runs[i+1:]...)
	}
}
