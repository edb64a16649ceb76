package flow

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/kfaketest"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/replicate"
	"github.com/kmirror/kmirror/internal/topicsync"
)

// TestNewTopicHandedOverBeforeTheNextRefresh: a source topic created
// between two passes is created on the target and handed to the data
// plane (here, the scale-out universe) by the pass a check of the source's
// topic list starts, well before the next regular pass.
func TestNewTopicHandedOverBeforeTheNextRefresh(t *testing.T) {
	const refresh = 10 * time.Second // a check every second
	cfg, err := config.Parse("kmirror.yaml", []byte(`clusters:
  primary:
    bootstrap_servers: ["127.0.0.1:9092"]
  dr:
    bootstrap_servers: ["127.0.0.1:9192"]
flows:
  - source: primary
    target: dr
    topic_refresh_interval: 10s
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	fc := cfg.Flows[0]
	srcCluster, dstCluster := kfaketest.Cluster(t), kfaketest.Cluster(t)
	src := kfaketest.Client(t, srcCluster, kgo.MetadataMinAge(10*time.Millisecond))
	dst := kfaketest.Client(t, dstCluster, kgo.MetadataMinAge(10*time.Millisecond))
	srcOp := kadm.NewClient(kfaketest.Client(t, srcCluster))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := srcOp.CreateTopic(ctx, 2, -1, nil, "orders"); err != nil {
		t.Fatal(err)
	}

	m := metrics.New()
	f := &Flow{cfg: fc, source: cfg.Clusters[fc.Source], target: cfg.Clusters[fc.Target], graph: cfg.Topology(),
		metrics: m, logger: slog.New(slog.DiscardHandler)}
	var mu sync.Mutex
	var passes []time.Time
	var last []topicsync.Topic
	r := &run{
		Flow: f, src: src, tgt: dst, meta: dst,
		srcAdmin: kadm.NewClient(src), tgtAdmin: kadm.NewClient(dst),
		naming:    policy.NewTopics(fc).WithGraph(f.graph, fc),
		store:     progress.NewStore(dst, policy.ProgressTopic(fc.Name)),
		loaded:    progress.Loaded{Started: true, Positions: map[progress.Partition]progress.Position{}, Runs: map[progress.Partition][]offsets.Run{}},
		repl:      replicate.New(replicate.Options{Flow: fc.Name, Metrics: m, Logger: f.logger}),
		targetIDs: map[string]string{}, stuckTopics: map[string]bool{},
		owns: func(progress.Partition) bool { return false },
		universe: func(ready []topicsync.Topic) {
			mu.Lock()
			defer mu.Unlock()
			passes = append(passes, time.Now())
			last = slices.Clone(ready)
		},
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.syncTopics(ctx)
	}()
	defer func() { cancel(); <-done }()

	handed := func(topic string) (time.Time, bool) {
		mu.Lock()
		defer mu.Unlock()
		for _, tp := range last {
			if tp.Source == topic {
				return passes[len(passes)-1], true
			}
		}
		return time.Time{}, false
	}
	waitHanded := func(topic string) time.Time {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			if at, ok := handed(topic); ok {
				return at
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not handed to the data plane within 30s", topic)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	first := waitHanded("orders")
	if _, err := srcOp.CreateTopic(ctx, 3, -1, nil, "payments"); err != nil {
		t.Fatal(err)
	}
	at := waitHanded("payments")
	if took := at.Sub(first); took >= refresh-time.Second {
		t.Errorf("payments handed over %s after the first pass, want well before the next regular pass (%s)", took, refresh)
	}
	tds, err := kadm.NewClient(dst).ListTopics(ctx, "primary.payments")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(tds["primary.payments"].Partitions); n != 3 {
		t.Errorf("primary.payments has %d partitions on the target, want 3 (created before it was handed over)", n)
	}
}
