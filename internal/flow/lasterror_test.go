package flow

import (
	"log/slog"
	"testing"
	"time"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/metrics"
)

func TestLastErrorsFollowsTheErrorCounter(t *testing.T) {
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
	m.Errors.WithLabelValues("ab", metrics.ErrProduce).Add(4) // before the run: not its fault
	l := newLastErrors(f)
	at := time.UnixMilli(1_000)
	if got := l.update(f, at); got != nil {
		t.Fatalf("last error %+v before any fault", got)
	}
	m.Errors.WithLabelValues("ba", metrics.ErrProduce).Inc() // another flow's
	if got := l.update(f, at); got != nil {
		t.Fatalf("last error %+v from another flow", got)
	}

	// A health check failure: the message is the cluster's error.
	msg := `cluster "b" (127.0.0.1:2) unreachable: no broker answered`
	f.targetErr.Store(&msg)
	f.healthKind.Store("b", metrics.ErrUnreachable)
	m.Errors.WithLabelValues("ab", metrics.ErrUnreachable).Inc()
	got := l.update(f, at.Add(time.Second))
	if got == nil || got.Kind != metrics.ErrUnreachable || got.Message != msg || got.AtMs != 2_000 {
		t.Fatalf("last error = %+v, want the unreachable target with its message at 2000", got)
	}
	// Nothing new: the same fault stays the last.
	if again := l.update(f, at.Add(2*time.Second)); again != got {
		t.Errorf("last error changed to %+v without a new fault", again)
	}
	// A fault whose message only the log has.
	m.Errors.WithLabelValues("ab", metrics.ErrHeartbeat).Inc()
	if got := l.update(f, at.Add(3*time.Second)); got == nil || got.Kind != metrics.ErrHeartbeat || got.Message != "" {
		t.Errorf("last error = %+v, want kind heartbeat without a message", got)
	}
}
