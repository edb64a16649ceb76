package topicsync

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/kfaketest"
	"github.com/kmirror/kmirror/internal/policy"
)

const yamlHead = `clusters:
  primary:
    bootstrap_servers: ["127.0.0.1:9092"]
  dr:
    bootstrap_servers: ["127.0.0.1:9192"]
flows:
  - source: primary
    target: dr
`

// env is a source and a target cluster. The Syncer uses src and dst, as
// kmirror would; the test changes the clusters out of band through the
// operator clients srcOp and dstOp, as an operator would. (A kgo client
// caches metadata, and a CreatePartitions through the client that then
// lists all topics would hide the topic from that list until the cache
// expires; separate clients avoid testing that.)
type env struct {
	ctx          context.Context
	src, dst     *kgo.Client
	srcOp, dstOp *kadm.Client
	srcCluster   *kfake.Cluster
	dstCluster   *kfake.Cluster
}

// newClients starts a cluster and returns a client for the Syncer, with
// the shortest metadata cache kgo allows, and an operator client.
func newClients(t *testing.T) (c *kfake.Cluster, syncer *kgo.Client, operator *kadm.Client) {
	t.Helper()
	c = kfaketest.Cluster(t)
	syncer = kfaketest.Client(t, c, kgo.MetadataMinAge(10*time.Millisecond))
	operator = kadm.NewClient(kfaketest.Client(t, c))
	return c, syncer, operator
}

func newEnv(t *testing.T) *env {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	e := &env{ctx: ctx}
	e.srcCluster, e.src, e.srcOp = newClients(t)
	e.dstCluster, e.dst, e.dstOp = newClients(t)
	return e
}

// syncUntil runs passes, as kmirror does periodically, until done accepts
// one, and returns that pass. Changes made out of band show once the
// Syncer's metadata cache expires.
func (e *env) syncUntil(t *testing.T, s *Syncer, what string, done func(Result) bool) Result {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		res := e.sync(t, s)
		if done(res) {
			return res
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pass %s within 5s; last pass: %+v", what, res)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncer returns a Syncer from primary to dr whose flow has the given extra
// YAML keys.
func (e *env) syncer(t *testing.T, flowKeys string) *Syncer {
	t.Helper()
	cfg, err := config.Parse("kmirror.yaml", []byte(yamlHead+flowKeys), nil)
	if err != nil {
		t.Fatal(err)
	}
	f := cfg.Flows[0]
	s := New(e.src, e.dst, policy.NewTopics(f), f.ReplicationFactor, slog.New(slog.DiscardHandler)).
		WithConfigs(f.TopicConfigExcludeRegexps, f.TopicConfigOverrides)
	if f.DeleteTopics {
		s.WithDeleteTopics(nil)
	}
	return s
}

func (e *env) create(t *testing.T, adm *kadm.Client, topic string, partitions int32, configs map[string]*string) {
	t.Helper()
	if _, err := adm.CreateTopic(e.ctx, partitions, -1, configs, topic); err != nil {
		t.Fatalf("creating %q: %v", topic, err)
	}
}

func (e *env) sync(t *testing.T, s *Syncer) Result {
	t.Helper()
	res, err := s.Sync(e.ctx)
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	for _, err := range res.Errors {
		t.Errorf("Sync reported a topic error: %v", err)
	}
	return res
}

// partitions returns the partition count of every listed topic of adm,
// internal ones included, bypassing the client's metadata cache.
func (e *env) partitions(t *testing.T, adm *kadm.Client) map[string]int {
	t.Helper()
	tds, err := adm.ListTopicsWithInternal(kadm.WithAuthorizedOps(e.ctx))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for name, td := range tds {
		if td.Err != nil {
			t.Fatalf("topic %q: %v", name, td.Err)
		}
		out[name] = len(td.Partitions)
	}
	return out
}

// dynamicConfigs returns the configs set explicitly on topic.
func (e *env) dynamicConfigs(t *testing.T, adm *kadm.Client, topic string) map[string]string {
	t.Helper()
	rcs, err := adm.DescribeTopicConfigs(e.ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, c := range rc.Configs {
		if c.Source == kmsg.ConfigSourceDynamicTopicConfig {
			out[c.Key] = c.MaybeValue()
		}
	}
	return out
}

func TestSyncCreatesMatchingTopics(t *testing.T) {
	e := newEnv(t)
	e.create(t, e.srcOp, "orders", 3, map[string]*string{
		"retention.ms":      kadm.StringPtr("3600000"),
		"cleanup.policy":    kadm.StringPtr("compact"),
		"max.message.bytes": kadm.StringPtr("2000000"),
		// Excluded: they describe the source brokers, not the data.
		"min.insync.replicas":    kadm.StringPtr("1"),
		"message.timestamp.type": kadm.StringPtr("LogAppendTime"),
	})
	e.create(t, e.srcOp, "payments", 1, nil)
	e.create(t, e.srcOp, "audit", 2, nil)                                                              // topics_exclude
	e.create(t, e.srcOp, "__internal", 1, nil)                                                         // internal by name
	e.create(t, e.srcOp, "hidden", 1, map[string]*string{"kfake.is_internal": kadm.StringPtr("true")}) // internal by metadata
	e.create(t, e.srcOp, "dr.orders", 1, nil)                                                          // copy made by the reverse flow
	e.create(t, e.srcOp, "unselected", 1, nil)

	s := e.syncer(t, `    topics: ["orders", "payments", "audit", "hidden", "__internal", "dr\\..*"]
    topics_exclude: ["audit"]
`)
	res := e.sync(t, s)
	wantReady := []shape{
		{Source: "orders", Target: "primary.orders", Partitions: 3},
		{Source: "payments", Target: "primary.payments", Partitions: 1},
	}
	if !reflect.DeepEqual(shapes(res.Ready), wantReady) {
		t.Errorf("Ready = %+v, want %+v", res.Ready, wantReady)
	}
	slices.Sort(res.Created)
	if want := []string{"primary.orders", "primary.payments"}; !reflect.DeepEqual(res.Created, want) {
		t.Errorf("Created = %q, want %q", res.Created, want)
	}
	if len(res.Removed) != 0 {
		t.Errorf("Removed = %q, want none", res.Removed)
	}

	got := e.partitions(t, e.dstOp)
	want := map[string]int{"primary.orders": 3, "primary.payments": 1}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("target topics = %v, want %v", got, want)
	}
	if cfg, want := e.dynamicConfigs(t, e.dstOp, "primary.orders"), map[string]string{
		"retention.ms":      "3600000",
		"cleanup.policy":    "compact",
		"max.message.bytes": "2000000",
	}; !reflect.DeepEqual(cfg, want) {
		t.Errorf("primary.orders explicit configs = %v, want %v", cfg, want)
	}
	if cfg := e.dynamicConfigs(t, e.dstOp, "primary.payments"); len(cfg) != 0 {
		t.Errorf("primary.payments explicit configs = %v, want none (defaults are not copied)", cfg)
	}

	// Later passes find everything ready and create nothing. (A pass within
	// the client's metadata cache age may still see the target topics as
	// missing; it then gets TOPIC_ALREADY_EXISTS and counts them as ready.)
	res = e.syncUntil(t, s, "creating nothing", func(r Result) bool { return len(r.Created) == 0 })
	if !reflect.DeepEqual(shapes(res.Ready), wantReady) || len(res.Removed) != 0 {
		t.Errorf("later pass = %+v, want the same Ready and nothing removed", res)
	}
	if got := e.partitions(t, e.dstOp); !reflect.DeepEqual(got, want) {
		t.Errorf("after later passes: target topics = %v, want %v", got, want)
	}
}

func TestSyncIdentityNaming(t *testing.T) {
	e := newEnv(t)
	e.create(t, e.srcOp, "orders", 2, map[string]*string{"retention.ms": kadm.StringPtr("1000")})
	e.create(t, e.srcOp, "dr.orders", 1, nil) // not a loop with identity naming
	res := e.sync(t, e.syncer(t, "    topic_naming: identity\n"))
	wantReady := []shape{
		{Source: "dr.orders", Target: "dr.orders", Partitions: 1},
		{Source: "orders", Target: "orders", Partitions: 2},
	}
	if !reflect.DeepEqual(shapes(res.Ready), wantReady) {
		t.Errorf("Ready = %+v, want %+v", res.Ready, wantReady)
	}
	if got, want := e.partitions(t, e.dstOp), map[string]int{"orders": 2, "dr.orders": 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("target topics = %v, want %v", got, want)
	}
	if cfg := e.dynamicConfigs(t, e.dstOp, "orders"); cfg["retention.ms"] != "1000" {
		t.Errorf("orders explicit configs = %v, want retention.ms=1000", cfg)
	}
}

func TestSyncGrowsTargetPartitions(t *testing.T) {
	e := newEnv(t)
	e.create(t, e.srcOp, "t", 2, nil)
	e.create(t, e.srcOp, "u", 4, nil)
	e.create(t, e.dstOp, "primary.u", 1, nil) // exists, too small
	s := e.syncer(t, "")

	res := e.sync(t, s)
	want := []shape{{"t", "primary.t", 2}, {"u", "primary.u", 4}}
	if !reflect.DeepEqual(shapes(res.Ready), want) {
		t.Errorf("Ready = %+v, want %+v", res.Ready, want)
	}
	if !reflect.DeepEqual(res.Created, []string{"primary.t"}) {
		t.Errorf("Created = %q, want [primary.t] (primary.u existed and is grown)", res.Created)
	}
	if got, want := e.partitions(t, e.dstOp), map[string]int{"primary.t": 2, "primary.u": 4}; !reflect.DeepEqual(got, want) {
		t.Errorf("target topics = %v, want %v", got, want)
	}

	rs, err := e.srcOp.UpdatePartitions(e.ctx, 5, "t")
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Error(); err != nil {
		t.Fatal(err)
	}
	want = []shape{{"t", "primary.t", 5}, {"u", "primary.u", 4}}
	res = e.syncUntil(t, s, "seeing 5 partitions of t", func(r Result) bool {
		return len(r.Ready) > 0 && r.Ready[0].Partitions == 5
	})
	if !reflect.DeepEqual(shapes(res.Ready), want) {
		t.Errorf("after growing the source: Ready = %+v, want %+v", res.Ready, want)
	}
	if len(res.Created) != 0 {
		t.Errorf("after growing the source: Created = %q, want none", res.Created)
	}
	if got, want := e.partitions(t, e.dstOp), map[string]int{"primary.t": 5, "primary.u": 4}; !reflect.DeepEqual(got, want) {
		t.Errorf("after growing the source: target topics = %v, want %v", got, want)
	}
}

func TestSyncReportsRemovedTopics(t *testing.T) {
	e := newEnv(t)
	e.create(t, e.srcOp, "a", 1, nil)
	e.create(t, e.srcOp, "b", 1, nil)
	s := e.syncer(t, "")
	if res := e.sync(t, s); len(res.Ready) != 2 {
		t.Fatalf("Ready = %+v, want a and b", res.Ready)
	}
	// Let the Syncer's client learn that the target topics exist.
	e.syncUntil(t, s, "creating nothing", func(r Result) bool { return len(r.Created) == 0 })

	rs, err := e.srcOp.DeleteTopics(e.ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Error(); err != nil {
		t.Fatal(err)
	}
	res := e.syncUntil(t, s, "removing a", func(r Result) bool { return len(r.Removed) > 0 })
	if !reflect.DeepEqual(res.Removed, []string{"a"}) {
		t.Errorf("Removed = %q, want [a]", res.Removed)
	}
	if want := []shape{{"b", "primary.b", 1}}; !reflect.DeepEqual(shapes(res.Ready), want) {
		t.Errorf("Ready = %+v, want %+v", res.Ready, want)
	}
	// Reported once only.
	if res := e.sync(t, s); len(res.Removed) != 0 {
		t.Errorf("second pass Removed = %q, want none", res.Removed)
	}

	// Deleting the last matching topic is reported too.
	if _, err := e.srcOp.DeleteTopics(e.ctx, "b"); err != nil {
		t.Fatal(err)
	}
	res = e.syncUntil(t, s, "removing b", func(r Result) bool { return len(r.Removed) > 0 })
	if !reflect.DeepEqual(res.Removed, []string{"b"}) || len(res.Ready) != 0 {
		t.Errorf("after deleting b: Removed = %q, Ready = %+v; want [b] and none ready", res.Removed, res.Ready)
	}
	// The target copies are kept.
	if got := e.partitions(t, e.dstOp); got["primary.a"] != 1 || got["primary.b"] != 1 {
		t.Errorf("target topics = %v, want primary.a and primary.b kept", got)
	}
}

func TestSyncExistingTargetIsReady(t *testing.T) {
	e := newEnv(t)
	e.create(t, e.srcOp, "t", 3, map[string]*string{"retention.ms": kadm.StringPtr("1000")})
	e.create(t, e.srcOp, "v", 2, nil)
	e.create(t, e.dstOp, "primary.t", 3, map[string]*string{"retention.ms": kadm.StringPtr("5000")})
	e.create(t, e.dstOp, "primary.v", 4, nil) // more partitions than the source: left alone

	res := e.sync(t, e.syncer(t, ""))
	want := []shape{{"t", "primary.t", 3}, {"v", "primary.v", 2}}
	if !reflect.DeepEqual(shapes(res.Ready), want) {
		t.Errorf("Ready = %+v, want %+v", res.Ready, want)
	}
	if len(res.Created) != 0 || len(res.Removed) != 0 {
		t.Errorf("Created = %q, Removed = %q; want none", res.Created, res.Removed)
	}
	if got, want := e.partitions(t, e.dstOp), map[string]int{"primary.t": 3, "primary.v": 4}; !reflect.DeepEqual(got, want) {
		t.Errorf("target topics = %v, want %v", got, want)
	}
	// Its configs follow the source from the first pass on.
	if cfg := e.dynamicConfigs(t, e.dstOp, "primary.t"); !reflect.DeepEqual(cfg, map[string]string{"retention.ms": "1000"}) {
		t.Errorf("existing target configs = %v, want retention.ms=1000 as on the source", cfg)
	}
	if !reflect.DeepEqual(res.ConfigUpdated, []string{"primary.t"}) {
		t.Errorf("ConfigUpdated = %q, want [primary.t]", res.ConfigUpdated)
	}
}

func TestSyncNothingToDo(t *testing.T) {
	e := newEnv(t)
	e.create(t, e.srcOp, "dr.x", 1, nil)
	res := e.sync(t, e.syncer(t, ""))
	if len(res.Ready)+len(res.Created)+len(res.Removed) != 0 {
		t.Errorf("Sync = %+v, want nothing", res)
	}
	if got := e.partitions(t, e.dstOp); len(got) != 0 {
		t.Errorf("target topics = %v, want none", got)
	}
}

// A source topic whose configs cannot be described is a problem of that
// topic only: Sync documents that it returns an error only when a cluster
// cannot be listed, and that per-topic problems go to Result.Errors. The
// other new topics must still be created and reported ready.
func TestSyncConfigDescribeFailureIsPerTopic(t *testing.T) {
	tests := []struct {
		name string
		err  *kerr.Error
	}{
		// The principal may describe the topic but not its configs.
		{"not authorized", kerr.TopicAuthorizationFailed},
		// The topic was deleted between listing and describing.
		{"deleted meanwhile", kerr.UnknownTopicOrPartition},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.create(t, e.srcOp, "a", 1, nil)
			e.create(t, e.srcOp, "b", 2, nil)
			e.srcCluster.Fault(kfake.Fault{
				Keys:     []kmsg.Key{kmsg.DescribeConfigs},
				Resource: "a",
				Err:      tc.err,
				Count:    -1,
			})
			res, err := e.syncer(t, "").Sync(e.ctx)
			if err != nil {
				t.Fatalf("Sync failed as a whole because one topic's configs could not be described: %v", err)
			}
			if want := []shape{{"b", "primary.b", 2}}; !reflect.DeepEqual(shapes(res.Ready), want) {
				t.Errorf("Ready = %+v, want %+v", res.Ready, want)
			}
			if len(res.Errors) != 1 || !errors.Is(res.Errors[0], tc.err) {
				t.Errorf("Errors = %v, want one %v for a", res.Errors, tc.err)
			}
			if got := e.partitions(t, e.dstOp); got["primary.b"] != 2 {
				t.Errorf("target topics = %v, want primary.b with 2 partitions", got)
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	if got := describe(nil); got != "{}" {
		t.Errorf("describe(nil) = %q", got)
	}
	got := describe(map[string]string{"b": "2", "a": "1"})
	if got != "{a=1, b=2}" {
		t.Errorf("describe = %q, want {a=1, b=2}", got)
	}
}

// shape is a Topic without its IDs, for comparisons.
type shape struct {
	Source, Target string
	Partitions     int32
}

func shapes(ts []Topic) []shape {
	out := make([]shape, 0, len(ts))
	for _, t := range ts {
		out = append(out, shape{t.Source, t.Target, t.Partitions})
	}
	return out
}

// TestSyncReportsTopicIDs checks that a ready topic carries the IDs of its
// source and target topics, and that a source topic deleted and created
// again under the same name shows with a new ID.
func TestSyncReportsTopicIDs(t *testing.T) {
	e := newEnv(t)
	e.create(t, e.srcOp, "a", 1, nil)
	s := e.syncer(t, "")
	first := e.sync(t, s)
	if len(first.Ready) != 1 || first.Ready[0].SourceID == "" || first.Ready[0].TargetID == "" {
		t.Fatalf("Ready = %+v, want a with both IDs", first.Ready)
	}
	again := e.sync(t, s)
	if len(again.Ready) != 1 || again.Ready[0].SourceID != first.Ready[0].SourceID || again.Ready[0].TargetID != first.Ready[0].TargetID {
		t.Fatalf("second pass Ready = %+v, want the same IDs as %+v", again.Ready, first.Ready)
	}
	if _, err := e.srcOp.DeleteTopics(e.ctx, "a"); err != nil {
		t.Fatal(err)
	}
	e.syncUntil(t, s, "removing a", func(r Result) bool { return len(r.Removed) > 0 })
	e.create(t, e.srcOp, "a", 1, nil)
	res := e.syncUntil(t, s, "finding a again", func(r Result) bool { return len(r.Ready) == 1 })
	if got := res.Ready[0]; got.SourceID == "" || got.SourceID == first.Ready[0].SourceID || got.TargetID != first.Ready[0].TargetID {
		t.Errorf("re-created topic = %+v; want a new source ID (old %s) and the same target ID", got, first.Ready[0].SourceID)
	}
}
