package heartbeat

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/kfaketest"
)

func TestEncodeIsTheDocumentedFormat(t *testing.T) {
	h := Record{Flow: "primary-to-dr", Source: "primary", Target: "dr", TsMs: 1767225600123}
	r := Encode("heartbeats", h)
	if got, want := string(r.Value), `{"flow":"primary-to-dr","source":"primary","target":"dr","ts_ms":1767225600123}`; got != want {
		t.Errorf("value = %s, want %s", got, want)
	}
	if string(r.Key) != "primary-to-dr" || r.Topic != "heartbeats" || r.Partition != 0 {
		t.Errorf("key %q topic %q partition %d, want the flow, heartbeats, 0", r.Key, r.Topic, r.Partition)
	}
	if !r.Timestamp.Equal(time.UnixMilli(1767225600123)) {
		t.Errorf("timestamp = %v, want ts_ms", r.Timestamp)
	}
	back, err := Decode(r)
	if err != nil || back != h {
		t.Errorf("Decode(Encode(h)) = %+v, %v; want %+v", back, err, h)
	}
}

func TestDecodeRejectsOtherRecords(t *testing.T) {
	for _, tc := range []struct {
		name       string
		key, value string
	}{
		{"not json", "f", "hello"},
		{"null value", "f", ""},
		{"no flow", "f", `{"ts_ms":5}`},
		{"no time", "f", `{"flow":"f"}`},
		{"key is not the flow", "g", `{"flow":"f","ts_ms":5}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &kgo.Record{Key: []byte(tc.key)}
			if tc.value != "" {
				r.Value = []byte(tc.value)
			}
			if h, err := Decode(r); err == nil {
				t.Errorf("Decode = %+v, want an error", h)
			}
		})
	}
}

func TestWatcherKeepsTheNewestHeartbeatOfItsFlow(t *testing.T) {
	var arrivals []Seen
	w := NewWatcher(WatcherOptions{Flow: "a-to-b", OnArrival: func(s Seen) { arrivals = append(arrivals, s) }})
	base := time.UnixMilli(1_700_000_000_000)
	hb := func(flow string, ts time.Time) *kgo.Record {
		return Encode("x", Record{Flow: flow, Source: "a", Target: "b", TsMs: ts.UnixMilli()})
	}
	if _, ok := w.Seen(); ok {
		t.Fatal("Seen before any heartbeat")
	}
	// Before the first heartbeat the age counts from the start.
	if age := w.Age(w.started.Add(3 * time.Second)); age != 3*time.Second {
		t.Errorf("age before any heartbeat = %v, want 3s since start", age)
	}
	steps := []struct {
		r     *kgo.Record
		at    time.Time
		newer bool
	}{
		{hb("a-to-b", base), base.Add(20 * time.Millisecond), true},
		{hb("b-to-a", base.Add(time.Second)), base.Add(time.Second), false},                  // another flow
		{hb("a-to-b", base.Add(-time.Second)), base.Add(time.Second), false},                 // older, arriving late
		{&kgo.Record{Key: []byte("a-to-b"), Value: []byte("junk")}, base, false},             // not a heartbeat
		{hb("a-to-b", base.Add(2*time.Second)), base.Add(2*time.Second - time.Second), true}, // written by a clock ahead
	}
	for i, s := range steps {
		if got := w.Observe(s.r, s.at); got != s.newer {
			t.Errorf("step %d: Observe = %v, want %v", i, got, s.newer)
		}
	}
	seen, ok := w.Seen()
	if !ok || !seen.Written.Equal(base.Add(2*time.Second)) || seen.Latency != 0 {
		t.Errorf("Seen = %+v, %v; want the last heartbeat with latency clamped to 0", seen, ok)
	}
	if len(arrivals) != 2 || arrivals[0].Latency != 20*time.Millisecond {
		t.Errorf("arrivals = %+v, want 2, the first 20ms late", arrivals)
	}
	if age := w.Age(base.Add(7 * time.Second)); age != 5*time.Second {
		t.Errorf("age = %v, want 5s since the newest heartbeat was written", age)
	}
}

// TestSendAndWatch writes heartbeats to a fake cluster and watches them
// with a Watcher, as a flow does through the copy on its target: the topic
// is created with the documented configs, every write is counted, and the
// age stays below the interval plus the fetch wait.
func TestSendAndWatch(t *testing.T) {
	c := kfaketest.Cluster(t)
	writer := kfaketest.Client(t, c, ProducerOpts()...)
	reader := kfaketest.Client(t, c, ConsumerOpts("heartbeats")...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(2)
	go func() {
		defer wg.Done()
		Send(ctx, SenderOptions{
			Client: writer, Topic: "heartbeats", Interval: 100 * time.Millisecond,
			Heartbeat: Record{Flow: "f", Source: "a", Target: "b"},
			OnSent:    func() { sent.Add(1) }, OnError: func(error) { failed.Add(1) },
			Logger: slog.New(slog.DiscardHandler),
		})
	}()
	var mu sync.Mutex
	var ages []time.Duration
	w := NewWatcher(WatcherOptions{Flow: "f", Logger: slog.New(slog.DiscardHandler),
		OnAge: func(d time.Duration) { mu.Lock(); ages = append(ages, d); mu.Unlock() }})
	go func() {
		defer wg.Done()
		w.Run(ctx, reader)
	}()

	deadline := time.Now().Add(15 * time.Second)
	for {
		s, ok := w.Seen()
		if ok && time.Since(s.Written) < time.Second {
			t.Logf("heartbeat seen %s after it was written; %d sent", s.Latency, sent.Load())
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no fresh heartbeat seen within 15s (sent %d, failed %d)", sent.Load(), failed.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if failed.Load() != 0 {
		t.Errorf("%d failed writes, want 0", failed.Load())
	}
	described, err := kadm.NewClient(writer).DescribeTopicConfigs(context.Background(), "heartbeats")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := described.On("heartbeats", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, c := range rc.Configs {
		got[c.Key] = c.MaybeValue()
	}
	for k, v := range TopicConfigs {
		if got[k] != v {
			t.Errorf("heartbeat topic config %s = %q, want %q", k, got[k], v)
		}
	}
	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(ages) == 0 {
		t.Errorf("OnAge never called")
	}
}

// TestSendReportsAFailureAndGoesOn checks that a writer that cannot reach
// its cluster reports every failed attempt and keeps trying.
func TestSendReportsAFailureAndGoesOn(t *testing.T) {
	writer, err := kgo.NewClient(append(ProducerOpts(), kgo.SeedBrokers("127.0.0.1:1"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var errs atomic.Int64
	var first atomic.Pointer[error]
	done := make(chan struct{})
	go func() {
		defer close(done)
		Send(ctx, SenderOptions{
			Client: writer, Topic: "heartbeats", Interval: 50 * time.Millisecond, Timeout: 300 * time.Millisecond,
			Heartbeat: Record{Flow: "f"},
			OnError: func(err error) {
				first.CompareAndSwap(nil, &err)
				if errs.Add(1) == 3 {
					cancel()
				}
			},
			Logger: slog.New(slog.DiscardHandler),
		})
	}()
	<-done
	if errs.Load() < 3 {
		t.Fatalf("%d failures reported before the end, want 3 retried attempts", errs.Load())
	}
	p := first.Load()
	if !strings.Contains((*p).Error(), `"heartbeats"`) {
		t.Errorf("error %q does not name the topic", *p)
	}
	t.Logf("reported: %v", *p)
}

// TestSendProbes checks that a writer with a Probe writes a heartbeat only
// when the probe succeeds, stamped with the time before the probe, and
// reports a failing probe as a failed attempt.
func TestSendProbes(t *testing.T) {
	for _, tt := range []struct {
		name      string
		probeErr  error
		wantSent  bool
		wantError string
	}{
		{name: "source answers", wantSent: true},
		{name: "source silent", probeErr: errors.New("source down"), wantError: "no heartbeat written: source down"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := kfaketest.Cluster(t)
			writer := kfaketest.Client(t, c, ProducerOpts()...)
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			var probed atomic.Int64
			var firstErr atomic.Pointer[error]
			var sent atomic.Int64
			done := make(chan struct{})
			go func() {
				defer close(done)
				Send(ctx, SenderOptions{
					Client: writer, Topic: "heartbeats", Cluster: "target", Interval: 50 * time.Millisecond,
					Heartbeat: Record{Flow: "f", Source: "a", Target: "b"},
					Probe: func(context.Context) error {
						probed.Add(1)
						time.Sleep(20 * time.Millisecond)
						return tt.probeErr
					},
					OnSent: func() {
						if sent.Add(1) == 2 {
							cancel()
						}
					},
					OnError: func(err error) {
						firstErr.CompareAndSwap(nil, &err)
						if probed.Load() >= 3 {
							cancel()
						}
					},
					Logger: slog.New(slog.DiscardHandler),
				})
			}()
			<-done
			if probed.Load() == 0 {
				t.Fatal("Probe never called")
			}
			if got := sent.Load() > 0; got != tt.wantSent {
				t.Fatalf("heartbeats sent: %d, want sent %v", sent.Load(), tt.wantSent)
			}
			if tt.wantError != "" {
				if p := firstErr.Load(); p == nil || !strings.Contains((*p).Error(), tt.wantError) {
					t.Fatalf("error %v, want one containing %q", p, tt.wantError)
				}
				return
			}
			// The heartbeat written is the flow's.
			reader := kfaketest.Client(t, c, kgo.ConsumeTopics("heartbeats"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer rcancel()
			fs := reader.PollFetches(rctx)
			if len(fs.Records()) == 0 {
				t.Fatalf("no heartbeat on the cluster: %v", fs.Err())
			}
			h, err := Decode(fs.Records()[0])
			if err != nil {
				t.Fatal(err)
			}
			if h.Flow != "f" || h.Source != "a" || h.Target != "b" {
				t.Errorf("heartbeat %+v, want flow f from a to b", h)
			}
		})
	}
}
