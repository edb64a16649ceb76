package replicate

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/progress"
)

func TestLostSources(t *testing.T) {
	for _, tc := range []struct {
		name string
		runs []offsets.Run
		tgt  int64
		want int64
	}{
		{"none", nil, 5, -1},
		{"below every run", []offsets.Run{{Source: 0, Target: 0, Len: 10}}, 10, -1},
		{"inside a run", []offsets.Run{{Source: 0, Target: 0, Len: 10}}, 4, 4},
		{"run shifted", []offsets.Run{{Source: 100, Target: 20, Len: 10}}, 25, 105},
		{"later run whole", []offsets.Run{{Source: 0, Target: 0, Len: 10}, {Source: 12, Target: 10, Len: 5}}, 10, 12},
		{"first of two", []offsets.Run{{Source: 0, Target: 0, Len: 10}, {Source: 12, Target: 10, Len: 5}}, 8, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := lostSources(tc.runs, tc.tgt); got != tc.want {
				t.Errorf("lostSources(%v, %d) = %d, want %d", tc.runs, tc.tgt, got, tc.want)
			}
		})
	}
}

// TestTargetDataLossCountedOnce reports one loss of a target partition by
// the producer's hook, by offsets going back, or both in either order: it
// is counted once and logged at ERROR once.
func TestTargetDataLossCountedOnce(t *testing.T) {
	for _, tc := range []struct {
		name       string
		hook, back []bool // per step: call the hook, then ack a record whose offset went back
	}{
		{"hook only", []bool{true}, []bool{false}},
		{"offsets back only", []bool{false}, []bool{true}},
		{"hook then offsets back", []bool{true, false}, []bool{false, true}},
		{"offsets back then hook", []bool{false, true}, []bool{true, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			var logs bytes.Buffer
			r := New(Options{
				Flow: flowName, Source: e.srcClient, Target: e.tgtClient, Progress: e.store,
				ProgressInterval: time.Second, Metrics: e.metrics,
				Logger: slog.New(slog.NewTextHandler(&logs, nil)),
			})
			r.Add([]Assignment{{
				Source:      progress.Partition{Topic: "src", Partition: 0},
				TargetTopic: "dst",
				Start:       progress.Position{SourceNext: 100, TargetNext: 100},
				Runs:        []offsets.Run{{Source: 0, Target: 0, Len: 100}},
			}})
			p := r.lookup("src", 0)
			for i := range tc.hook {
				if tc.hook[i] {
					r.TargetDataLoss("dst", 0)
				}
				if tc.back[i] {
					// The target lost offsets 60..99: the next record lands at 60.
					p.inflight.Add(1)
					r.acked(p, 100, 0, time.Now(), 1, &kgo.Record{Topic: "dst", Offset: 60}, nil)
				}
			}
			c := e.metrics.TargetDataLoss.WithLabelValues(flowName, "src")
			if got := counter(t, c); got != 1 {
				t.Errorf("kmirror_target_data_loss_total = %v, want 1", got)
			}
			if n := strings.Count(logs.String(), "level=ERROR"); n != 1 {
				t.Errorf("%d ERROR lines, want 1:\n%s", n, logs.String())
			}
			for _, back := range tc.back {
				if back && !strings.Contains(logs.String(), "from=60 to=100") {
					t.Errorf("no line with the lost source range from=60 to=100:\n%s", logs.String())
				}
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			if anyTrue(tc.back) {
				if got := p.omap.Runs(); len(got) != 2 || got[0].Len != 60 || got[1].Source != 100 || got[1].Target != 60 {
					t.Errorf("offset map after the loss: %+v, want [0..59→0..59] [100→60]", got)
				}
			}
		})
	}
}

func anyTrue(bs []bool) bool {
	for _, b := range bs {
		if b {
			return true
		}
	}
	return false
}
