package flow

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/metrics"
)

func TestStatusExtrasFromMetrics(t *testing.T) {
	cfg, err := config.Parse("kmirror.yaml", []byte(`clusters:
  a: {bootstrap_servers: ["127.0.0.1:1"]}
  b: {bootstrap_servers: ["127.0.0.1:2"]}
flows:
  - {name: ab, source: a, target: b}
  - {name: ba, source: b, target: a}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	f := New(cfg, cfg.Flows[0], m, slog.New(slog.DiscardHandler))

	// Nothing measured yet: the fields are left out of the JSON.
	js, err := json.Marshal(f.Status())
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"errors"`, `"lag_by_topic"`, `"latency_ms"`, `"group_sync_age_seconds"`} {
		if strings.Contains(string(js), field) {
			t.Errorf("status of an idle flow has %s: %s", field, js)
		}
	}

	m.Errors.WithLabelValues("ab", metrics.ErrProduce).Add(3)
	m.Errors.WithLabelValues("ab", metrics.ErrUnreachable).Inc()
	m.Errors.WithLabelValues("ab", metrics.ErrTopicSync)      // never counted: left out
	m.Errors.WithLabelValues("ba", metrics.ErrProduce).Add(7) // another flow's
	m.PartitionLag.WithLabelValues("ab", "orders", "0").Set(5)
	m.PartitionLag.WithLabelValues("ab", "orders", "1").Set(2)
	m.PartitionLag.WithLabelValues("ab", "payments", "0").Set(0)
	m.PartitionLag.WithLabelValues("ba", "orders", "0").Set(100)
	m.CheckpointAge.WithLabelValues("ab", "g1").Set(12)
	m.CheckpointAge.WithLabelValues("ab", "g2").Set(3)
	for range 98 {
		m.Latency.WithLabelValues("ab").Observe(0.003) // bucket ≤ 4 ms
	}
	m.Latency.WithLabelValues("ab").Observe(0.5) // bucket ≤ 512 ms
	m.Latency.WithLabelValues("ab").Observe(0.5)
	m.Latency.WithLabelValues("ba").Observe(60)

	s := f.Status()
	if s.Errors[metrics.ErrProduce] != 3 || s.Errors[metrics.ErrUnreachable] != 1 || len(s.Errors) != 2 {
		t.Errorf("errors = %v, want produce 3, unreachable 1", s.Errors)
	}
	if s.LagByTopic["orders"] != 7 || s.LagByTopic["payments"] != 0 || len(s.LagByTopic) != 2 {
		t.Errorf("lag by topic = %v, want orders 7, payments 0", s.LagByTopic)
	}
	if s.GroupSyncAgeSeconds == nil || *s.GroupSyncAgeSeconds != 3 {
		t.Errorf("group sync age = %v, want 3 (the youngest checkpoint)", s.GroupSyncAgeSeconds)
	}
	if s.LatencyMs == nil || s.LatencyMs.P50 != 4 || s.LatencyMs.P99 != 512 {
		t.Fatalf("latency = %+v, want p50 4 ms, p99 512 ms", s.LatencyMs)
	}

	// A minute later, with only fast records since: the window moved on.
	at := f.api.last
	for range 10 {
		m.Latency.WithLabelValues("ab").Observe(0.0015) // bucket ≤ 2 ms
	}
	if l := f.apiLatency(at.Add(apiLatencySpan + time.Second)); l == nil || l.P50 != 2 || l.P99 != 2 {
		t.Errorf("latency a minute later = %+v, want p50 and p99 2 ms", l)
	}
	// Called again within a second: no new snapshot, same window.
	if l := f.apiLatency(at.Add(apiLatencySpan + 1500*time.Millisecond)); l == nil || l.P99 != 2 {
		t.Errorf("latency = %+v, want p99 2 ms", l)
	}
}
