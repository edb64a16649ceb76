package heartbeat

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/retry"
)

// Seen is what a Watcher knows of the newest heartbeat that arrived.
type Seen struct {
	// Written is the time of the newest heartbeat seen (its ts_ms):
	// when it was written to the source, or, written to the target, when
	// the flow asked the source before writing it.
	Written time.Time
	// Arrived is when the watcher read it on the target.
	Arrived time.Time
	// Latency is Arrived minus Written: the time the heartbeat took
	// from the source to the target through the flow (or through the
	// flow's question to the source and its write to the target).
	Latency time.Duration
}

// WatcherOptions configure a Watcher.
type WatcherOptions struct {
	// Flow is the name of the flow whose heartbeats count; others in
	// the same topic are skipped.
	Flow string
	// OnAge is called every second with the time since the newest
	// heartbeat seen was written, or since the watcher started while
	// none was seen; it grows when heartbeats stop arriving.
	OnAge func(time.Duration)
	// OnArrival is called for every heartbeat newer than all before.
	OnArrival func(Seen)
	// OnError is called for every failed fetch (may be nil).
	OnError func(error)
	Logger  *slog.Logger
}

// Watcher keeps track of a flow's heartbeats arriving on its target.
type Watcher struct {
	o       WatcherOptions
	started time.Time

	mu   sync.Mutex
	seen Seen
	ok   bool
}

// NewWatcher returns a watcher started now.
func NewWatcher(o WatcherOptions) *Watcher {
	return &Watcher{o: o, started: time.Now()}
}

// Observe takes one record read on the target at time at. It reports
// whether it was a heartbeat of the flow newer than every one before.
func (w *Watcher) Observe(r *kgo.Record, at time.Time) bool {
	if string(r.Key) != w.o.Flow {
		return false
	}
	h, err := Decode(r)
	if err != nil {
		return false
	}
	w.mu.Lock()
	if w.ok && !h.Time().After(w.seen.Written) {
		w.mu.Unlock()
		return false
	}
	// Clocks of two machines may differ when another instance wrote
	// it: a heartbeat never arrives before it was written.
	s := Seen{Written: h.Time(), Arrived: at, Latency: max(at.Sub(h.Time()), 0)}
	w.seen, w.ok = s, true
	w.mu.Unlock()
	if w.o.OnArrival != nil {
		w.o.OnArrival(s)
	}
	return true
}

// Seen returns the newest heartbeat seen, and false if none was.
func (w *Watcher) Seen() (Seen, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen, w.ok
}

// Age is the time from the writing of the newest heartbeat seen to now,
// or from the watcher's start while none was seen.
func (w *Watcher) Age(now time.Time) time.Duration {
	from := w.started
	if s, ok := w.Seen(); ok {
		from = s.Written
	}
	return max(now.Sub(from), 0)
}

// Run reads cl, a client built with ConsumerOpts on the target's heartbeat
// topic, and calls OnAge every second, until ctx ends. A fetch failure is
// logged once per 30 s and passed to OnError; reading goes on.
func (w *Watcher) Run(ctx context.Context, cl *kgo.Client) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.poll(ctx, cl)
	}()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if w.o.OnAge != nil {
			w.o.OnAge(w.Age(time.Now()))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *Watcher) poll(ctx context.Context, cl *kgo.Client) {
	errLog := retry.Throttle{Every: errorLogEvery}
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		now := time.Now()
		fetches.EachError(func(topic string, _ int32, err error) {
			// The copy of the topic appears only once topic sync created
			// it: until then the client waits for it.
			if errors.Is(err, kerr.UnknownTopicOrPartition) || errors.Is(err, context.Canceled) {
				return
			}
			if w.o.OnError != nil {
				w.o.OnError(err)
			}
			if errLog.Allow() {
				w.o.Logger.Error("cannot read heartbeats on the target; retrying", "topic", topic, "err", err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) { w.Observe(r, now) })
		if fetches.Err() != nil && len(fetches.Records()) == 0 {
			// Do not spin on a partition that fails at once.
			if !retry.Sleep(ctx, time.Second) {
				return
			}
		}
	}
}
