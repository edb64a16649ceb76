package flow

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/kfaketest"
	"github.com/kmirror/kmirror/internal/metrics"
)

// meshFlow builds flow a-to-b of a full mesh of a, b and c, with c at
// cAddr, and clients of a and b.
func meshFlow(t *testing.T, cAddr string, naming string) (*Flow, *kgo.Client, *kgo.Client) {
	t.Helper()
	a := kfaketest.Cluster(t, kfake.ClusterID("id-a"))
	b := kfaketest.Cluster(t, kfake.ClusterID("id-b"))
	var flows string
	for _, f := range [][2]string{{"a", "b"}, {"a", "c"}, {"b", "a"}, {"b", "c"}, {"c", "a"}, {"c", "b"}} {
		flows += fmt.Sprintf("  - {name: %s-to-%s, source: %s, target: %s, topic_naming: %s}\n", f[0], f[1], f[0], f[1], naming)
	}
	body := fmt.Sprintf("clusters:\n  a: {bootstrap_servers: [%q]}\n  b: {bootstrap_servers: [%q]}\n  c: {bootstrap_servers: [%q], dial_timeout: 200ms}\nflows:\n%s",
		a.ListenAddrs()[0], b.ListenAddrs()[0], cAddr, flows)
	cfg, err := config.Parse("kmirror.yaml", []byte(body), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	f := New(cfg, cfg.Flows[0], metrics.New(), slog.New(slog.DiscardHandler))
	return f, kfaketest.Client(t, a), kfaketest.Client(t, b)
}

// A flow with provenance learns its clusters' IDs at start and the other
// clusters' in the background; records of an origin the topology routes
// by another flow are routed once its ID is known, and not before.
func TestStartProvenance(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("all clusters answer", func(t *testing.T) {
		c := kfaketest.Cluster(t, kfake.ClusterID("id-c"))
		f, src, tgt := meshFlow(t, c.ListenAddrs()[0], "identity")
		runCtx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		start := time.Now()
		pv, ok := f.startProvenance(runCtx, &wg, src, tgt)
		took := time.Since(start)
		stop()
		wg.Wait() // the ledger reading other flows' progress ends with the run
		if !ok || pv == nil {
			t.Fatalf("startProvenance = %v, %v", pv, ok)
		}
		if took > provenanceWait {
			t.Errorf("start took %s, want less than %s with every cluster up", took, provenanceWait)
		}
		if pv.SourceID != "id-a" || pv.TargetID != "id-b" {
			t.Errorf("IDs = %q, %q; want id-a, id-b", pv.SourceID, pv.TargetID)
		}
		// In the full mesh, c-to-b brings c's records to b; a's own go
		// by this flow; an unknown origin is not routed.
		for origin, want := range map[string]bool{"id-c": true, "id-a": false, "id-b": false, "id-x": false} {
			if got := pv.Routed(origin); got != want {
				t.Errorf("Routed(%s) = %v, want %v", origin, got, want)
			}
		}
	})

	t.Run("another cluster unreachable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close() // nothing listens there
		f, src, tgt := meshFlow(t, addr, "identity")
		runCtx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		start := time.Now()
		pv, ok := f.startProvenance(runCtx, &wg, src, tgt)
		took := time.Since(start)
		if !ok || pv == nil {
			t.Fatalf("startProvenance = %v, %v", pv, ok)
		}
		if took < provenanceWait || took > provenanceWait+5*time.Second {
			t.Errorf("start took %s, want about %s (waiting for c)", took, provenanceWait)
		}
		if pv.Routed("id-c") {
			t.Error("records of c are routed before c's ID is known")
		}
		stop()
		wg.Wait() // the background retries end with the run
	})

	t.Run("prefix naming keeps no provenance", func(t *testing.T) {
		f, src, tgt := meshFlow(t, "127.0.0.1:1", "prefix")
		var wg sync.WaitGroup
		pv, ok := f.startProvenance(ctx, &wg, src, tgt)
		wg.Wait()
		if !ok || pv != nil {
			t.Fatalf("startProvenance = %v, %v; want nil, true", pv, ok)
		}
	})
}
