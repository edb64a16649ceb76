package flow

import (
	"math"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/kmirror/kmirror/internal/status"
)

// apiLatencySpan is the window of the latency quantiles in Status.
const apiLatencySpan = time.Minute

// apiLatencyEvery is the least time between two snapshots of the latency
// histogram kept for Status, so that frequent callers keep the window
// small.
const apiLatencyEvery = time.Second

// LatencyMs is the replication latency of a flow over its last minute:
// the upper bounds, in milliseconds, of the buckets of
// kmirror_replication_latency_seconds that hold the quantiles (as in
// kmirror status).
type LatencyMs struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
}

// apiState is what Status keeps between calls: snapshots of the flow's
// latency histogram.
type apiState struct {
	mu      sync.Mutex
	latency status.LatencyWindow
	last    time.Time
}

// addExtras fills the fields of s read from the metrics registry: errors
// by kind (those counted at least once), lag by topic, the age of the group offset sync and the latency
// quantiles. Reading them asks no cluster.
func (f *Flow) addExtras(s *Status, now time.Time) {
	for kind, n := range f.errorCounts() {
		if n <= 0 {
			continue // a kind set up in advance, never counted
		}
		if s.Errors == nil {
			s.Errors = map[string]int64{}
		}
		s.Errors[kind] = int64(n)
	}
	for _, m := range flowSeries(f.metrics.PartitionLag, f.cfg.Name) {
		if s.LagByTopic == nil {
			s.LagByTopic = map[string]int64{}
		}
		s.LagByTopic[label(m, "topic")] += int64(m.GetGauge().GetValue())
	}
	if f.cfg.SyncGroupOffsets {
		youngest := math.Inf(1)
		for _, m := range flowSeries(f.metrics.CheckpointAge, f.cfg.Name) {
			youngest = min(youngest, m.GetGauge().GetValue())
		}
		if !math.IsInf(youngest, 1) {
			s.GroupSyncAgeSeconds = &youngest
		}
	}
	s.LatencyMs = f.apiLatency(now)
}

// apiLatency returns the latency quantiles over the last minute, or nil
// while no record was replicated in it.
func (f *Flow) apiLatency(now time.Time) *LatencyMs {
	series := flowSeries(f.metrics.Latency, f.cfg.Name)
	if len(series) == 0 {
		return nil
	}
	h := series[0].GetHistogram()
	a := &f.api
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.last.IsZero() {
		// The histogram counts from the start of the process: its first
		// window starts there, with every bucket empty.
		zero := &dto.Histogram{SampleCount: new(uint64)}
		for _, b := range h.GetBucket() {
			zero.Bucket = append(zero.Bucket, &dto.Bucket{UpperBound: b.UpperBound, CumulativeCount: new(uint64)})
		}
		a.latency = status.LatencyWindow{Span: apiLatencySpan}
		a.latency.Add(f.created, zero)
	}
	if now.Sub(a.last) >= apiLatencyEvery {
		a.latency.Add(now, h)
		a.last = now
	}
	p50, ok50 := a.latency.Quantile(0.50)
	p99, ok99 := a.latency.Quantile(0.99)
	if !ok50 || !ok99 {
		return nil
	}
	return &LatencyMs{P50: p50, P99: p99}
}
