package topicsync

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/kafka"
)

func TestDiffConfigs(t *testing.T) {
	ptr := func(s string) *string { return &s }
	tests := []struct {
		name      string
		source    map[string]string
		target    map[string]string
		exclude   []string // nil: the default list
		overrides map[string]string
		managed   []string // keys the source gave the target before
		want      []change
	}{
		{
			name:   "in step",
			source: map[string]string{"retention.ms": "1000", "cleanup.policy": "compact"},
			target: map[string]string{"retention.ms": "1000", "cleanup.policy": "compact"},
		},
		{
			name:    "added, changed and deleted on the source",
			source:  map[string]string{"retention.ms": "2000", "cleanup.policy": "compact"},
			target:  map[string]string{"retention.ms": "1000", "segment.bytes": "1048576"},
			managed: []string{"retention.ms", "segment.bytes"},
			want: []change{
				{Key: "cleanup.policy", New: ptr("compact")},
				{Key: "retention.ms", Old: ptr("1000"), New: ptr("2000")},
				{Key: "segment.bytes", Old: ptr("1048576")},
			},
		},
		{
			name:    "a key only ever set on the target stays",
			source:  map[string]string{"retention.ms": "2000"},
			target:  map[string]string{"retention.ms": "2000", "segment.bytes": "1048576"},
			managed: []string{"retention.ms"},
		},
		{
			name:   "excluded keys are never set, changed or deleted",
			source: map[string]string{"message.timestamp.type": "LogAppendTime", "min.insync.replicas": "3", "retention.ms": "1"},
			target: map[string]string{"min.insync.replicas": "1", "unclean.leader.election.enable": "true", "retention.ms": "1"},
		},
		{
			name:      "an override wins over the source and over exclude",
			source:    map[string]string{"max.message.bytes": "1000000", "min.insync.replicas": "3"},
			target:    map[string]string{"max.message.bytes": "1000000"},
			overrides: map[string]string{"max.message.bytes": "2000000", "min.insync.replicas": "1"},
			want: []change{
				{Key: "max.message.bytes", Old: ptr("1000000"), New: ptr("2000000")},
				{Key: "min.insync.replicas", New: ptr("1")},
			},
		},
		{
			name:      "an override stays when the source deletes the key",
			source:    map[string]string{},
			target:    map[string]string{"max.message.bytes": "2000000"},
			overrides: map[string]string{"max.message.bytes": "2000000"},
		},
		{
			name:    "a custom exclude list replaces the default",
			source:  map[string]string{"min.insync.replicas": "2", "retention.ms": "5"},
			target:  map[string]string{"retention.ms": "9", "local.retention.ms": "7"},
			exclude: []string{`retention\.ms`, `local\..*`},
			want: []change{
				{Key: "min.insync.replicas", New: ptr("2")},
			},
		},
		{
			name:    "an empty exclude list copies everything",
			source:  map[string]string{"min.insync.replicas": "2"},
			target:  map[string]string{"message.timestamp.type": "LogAppendTime"},
			exclude: []string{},
			managed: []string{"message.timestamp.type"},
			want: []change{
				{Key: "message.timestamp.type", Old: ptr("LogAppendTime")},
				{Key: "min.insync.replicas", New: ptr("2")},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pol := configPolicy{exclude: defaultExclude(), overrides: tc.overrides}
			if tc.exclude != nil {
				pol.exclude = nil
				for _, re := range tc.exclude {
					pol.exclude = append(pol.exclude, regexp.MustCompile(`^(?:`+re+`)$`))
				}
			}
			deletable := func(k string) bool { return slices.Contains(tc.managed, k) && !pol.excluded(k) }
			got := diffConfigs(pol.desired(tc.source), tc.target, deletable)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("diff = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestChangeString(t *testing.T) {
	v1, v2 := "1", "2"
	got := describeChanges([]change{{Key: "a", Old: &v1, New: &v2}, {Key: "b", New: &v1}, {Key: "c", Old: &v2}})
	if want := "a: 1 -> 2, b: (default) -> 1, c: 2 -> (default)"; got != want {
		t.Errorf("describeChanges = %q, want %q", got, want)
	}
}

// logs records the messages logged through it.
type logs struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logs) Enabled(context.Context, slog.Level) bool { return true }
func (l *logs) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logs) WithGroup(string) slog.Handler            { return l }
func (l *logs) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	line := r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += " " + a.Key + "=" + a.Value.String()
		return true
	})
	l.msgs = append(l.msgs, line)
	return nil
}

// count returns how many lines contain every part.
func (l *logs) count(parts ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
next:
	for _, m := range l.msgs {
		for _, p := range parts {
			if !strings.Contains(m, p) {
				continue next
			}
		}
		n++
	}
	return n
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.msgs, "\n")
}

func (e *env) alter(t *testing.T, adm *kadm.Client, topic string, ops ...kadm.AlterConfig) {
	t.Helper()
	rs, err := adm.AlterTopicConfigs(e.ctx, ops, topic)
	if err == nil {
		_, err = rs.On(topic, nil)
	}
	if err != nil {
		t.Fatalf("altering %q configs: %v", topic, err)
	}
}

func set(k, v string) kadm.AlterConfig {
	return kadm.AlterConfig{Op: kadm.SetConfig, Name: k, Value: kadm.StringPtr(v)}
}

func del(k string) kadm.AlterConfig { return kadm.AlterConfig{Op: kadm.DeleteConfig, Name: k} }

// TestSyncConfigsFollowSource changes, adds and deletes configs of a source
// topic and checks that the next pass brings the target in step, with one
// DescribeConfigs per cluster, excluded keys left alone and overrides kept.
func TestSyncConfigsFollowSource(t *testing.T) {
	e := newEnv(t)
	e.create(t, e.srcOp, "t", 2, map[string]*string{
		"retention.ms":      kadm.StringPtr("3600000"),
		"segment.bytes":     kadm.StringPtr("1048576"),
		"max.message.bytes": kadm.StringPtr("1000000"),
	})
	e.create(t, e.srcOp, "u", 1, nil)
	e.create(t, e.srcOp, "v", 1, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")})
	l := &logs{}
	s := e.syncer(t, `    topic_config_overrides: {max.message.bytes: "2000000"}
`)
	s.logger = slog.New(l)
	res := e.sync(t, s)
	if len(res.Created) != 3 {
		t.Fatalf("Created = %q, want 3 topics", res.Created)
	}
	want := map[string]string{"retention.ms": "3600000", "segment.bytes": "1048576", "max.message.bytes": "2000000"}
	if got := e.dynamicConfigs(t, e.dstOp, "primary.t"); !reflect.DeepEqual(got, want) {
		t.Fatalf("created with %v, want %v (override over the source)", got, want)
	}
	// An operator sets an excluded key and a key the source does not set
	// on the target: both are left alone.
	e.alter(t, e.dstOp, "primary.t", set("min.insync.replicas", "1"), set("segment.ms", "600000"))
	res = e.syncUntil(t, s, "creating nothing", func(r Result) bool { return len(r.Created) == 0 })
	if len(res.ConfigUpdated) != 0 || len(res.ConfigErrors) != 0 {
		t.Fatalf("pass with nothing changed: ConfigUpdated = %q, ConfigErrors = %v; want none", res.ConfigUpdated, res.ConfigErrors)
	}

	e.alter(t, e.srcOp, "t",
		set("retention.ms", "7200000"),                 // changed
		del("segment.bytes"),                           // deleted
		set("cleanup.policy", "compact"),               // added
		set("max.message.bytes", "3000000"),            // overridden: stays 2000000
		set("message.timestamp.type", "LogAppendTime"), // excluded
	)
	e.alter(t, e.srcOp, "v", del("cleanup.policy"))
	describes := map[string]*kfake.FaultHandle{}
	for name, c := range map[string]*kfake.Cluster{"source": e.srcCluster, "target": e.dstCluster} {
		describes[name] = c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.DescribeConfigs}, Observe: true, Count: -1})
	}
	alters := e.dstCluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.IncrementalAlterConfigs}, Observe: true, Count: -1})
	res = e.sync(t, s)
	for name, h := range describes {
		if n := h.Hits(); n != 1 {
			t.Errorf("%s: %d DescribeConfigs requests in one pass, want 1 for all topics", name, n)
		}
		h.Remove()
	}
	if n := alters.Hits(); n != 1 {
		t.Errorf("%d IncrementalAlterConfigs requests in one pass, want 1 for both changed topics", n)
	}
	alters.Remove()
	if want := []string{"primary.t", "primary.v"}; !reflect.DeepEqual(res.ConfigUpdated, want) {
		t.Errorf("ConfigUpdated = %q, want %q", res.ConfigUpdated, want)
	}
	want = map[string]string{"retention.ms": "7200000", "cleanup.policy": "compact", "max.message.bytes": "2000000",
		"min.insync.replicas": "1", "segment.ms": "600000"}
	if got := e.dynamicConfigs(t, e.dstOp, "primary.t"); !reflect.DeepEqual(got, want) {
		t.Errorf("primary.t configs = %v, want %v", got, want)
	}
	if got, want := e.dynamicConfigs(t, e.dstOp, "primary.v"), map[string]string{"max.message.bytes": "2000000"}; !reflect.DeepEqual(got, want) {
		t.Errorf("primary.v configs = %v, want %v (cleanup.policy deleted as on the source, the override kept)", got, want)
	}
	if n := l.count("updated target topic configs", "topic=primary.t",
		"changes=cleanup.policy: (default) -> compact, retention.ms: 3600000 -> 7200000, segment.bytes: 1048576 -> (default)"); n != 1 {
		t.Errorf("%d lines for the change of primary.t, want 1; log:\n%s", n, l)
	}
	if n := l.count("updated target topic configs", "topic=primary.v", "changes=cleanup.policy: compact -> (default)"); n != 1 {
		t.Errorf("%d lines for the change of primary.v, want 1; log:\n%s", n, l)
	}

	// In step: the next pass changes nothing.
	if res := e.sync(t, s); len(res.ConfigUpdated) != 0 {
		t.Errorf("pass after the update: ConfigUpdated = %q, want none", res.ConfigUpdated)
	}
}

// TestSyncConfigFailureKeepsReplicating checks that a target refusing a
// config change reports it once per distinct problem, keeps the topic
// ready, and retries on every pass until it succeeds.
func TestSyncConfigFailureKeepsReplicating(t *testing.T) {
	e := newEnv(t)
	e.create(t, e.srcOp, "t", 1, map[string]*string{"retention.ms": kadm.StringPtr("1000")})
	l := &logs{}
	s := e.syncer(t, "")
	s.logger = slog.New(l)
	s.WithAccess(kafka.Access{}, kafka.Access{Cluster: "dr", Principal: "User:kmirror"})
	e.syncUntil(t, s, "creating nothing", func(r Result) bool { return len(r.Created) == 0 })

	e.alter(t, e.srcOp, "t", set("retention.ms", "2000"))
	fault := e.dstCluster.Fault(kfake.Fault{
		Keys: []kmsg.Key{kmsg.IncrementalAlterConfigs}, Resource: "primary.t", Err: kerr.TopicAuthorizationFailed, Count: -1,
	})
	for range 3 {
		res, err := s.Sync(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := []shape{{"t", "primary.t", 1}}; !reflect.DeepEqual(shapes(res.Ready), want) {
			t.Fatalf("Ready = %+v, want %+v: a config problem must not stop replication", res.Ready, want)
		}
		if len(res.ConfigErrors) != 1 || !errors.Is(res.ConfigErrors[0], kerr.TopicAuthorizationFailed) ||
			!strings.Contains(res.ConfigErrors[0].Error(), "ALTER_CONFIGS on topic \"primary.t\"") {
			t.Fatalf("ConfigErrors = %v, want one naming ALTER_CONFIGS on primary.t", res.ConfigErrors)
		}
		if len(res.Errors) != 0 || len(res.ConfigUpdated) != 0 {
			t.Fatalf("Errors = %v, ConfigUpdated = %q; want none", res.Errors, res.ConfigUpdated)
		}
	}
	if n := l.count("cannot bring target topic configs in step"); n != 1 {
		t.Errorf("problem logged %d times over 3 passes, want once; log:\n%s", n, l)
	}
	// Another problem is logged again.
	fault.Remove()
	fault = e.dstCluster.Fault(kfake.Fault{
		Keys: []kmsg.Key{kmsg.IncrementalAlterConfigs}, Resource: "primary.t", Err: kerr.InvalidConfig, Count: -1,
	})
	if res := e.sync(t, s); len(res.ConfigErrors) != 1 || !errors.Is(res.ConfigErrors[0], kerr.InvalidConfig) {
		t.Fatalf("ConfigErrors = %v, want one INVALID_CONFIG", res.ConfigErrors)
	}
	if n := l.count("cannot bring target topic configs in step"); n != 2 {
		t.Errorf("problems logged %d times, want 2 (one per distinct problem); log:\n%s", n, l)
	}
	fault.Remove()
	res := e.sync(t, s)
	if !reflect.DeepEqual(res.ConfigUpdated, []string{"primary.t"}) || len(res.ConfigErrors) != 0 {
		t.Fatalf("after the fault: ConfigUpdated = %q, ConfigErrors = %v; want primary.t updated", res.ConfigUpdated, res.ConfigErrors)
	}
	if got := e.dynamicConfigs(t, e.dstOp, "primary.t"); got["retention.ms"] != "2000" {
		t.Errorf("primary.t configs = %v, want retention.ms=2000", got)
	}
	if n := l.count("target topic configs in step with the source again", "topic=primary.t"); n != 1 {
		t.Errorf("recovery logged %d times, want once; log:\n%s", n, l)
	}
}

// TestSyncConfigDescribeFailure checks that a ready topic whose configs
// cannot be described stays ready and is reported as a config problem.
func TestSyncConfigDescribeFailure(t *testing.T) {
	e := newEnv(t)
	e.create(t, e.srcOp, "t", 1, nil)
	e.create(t, e.srcOp, "u", 1, nil)
	s := e.syncer(t, "")
	e.syncUntil(t, s, "creating nothing", func(r Result) bool { return len(r.Created) == 0 })
	e.alter(t, e.srcOp, "u", set("retention.ms", "5"))
	e.dstCluster.Fault(kfake.Fault{
		Keys: []kmsg.Key{kmsg.DescribeConfigs}, Resource: "primary.t", Err: kerr.TopicAuthorizationFailed, Count: -1,
	})
	res, err := s.Sync(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Ready) != 2 || len(res.Errors) != 0 {
		t.Errorf("Ready = %+v, Errors = %v; want both ready", res.Ready, res.Errors)
	}
	if len(res.ConfigErrors) != 1 || !strings.Contains(res.ConfigErrors[0].Error(), "DESCRIBE_CONFIGS on topic \"primary.t\"") {
		t.Errorf("ConfigErrors = %v, want one naming DESCRIBE_CONFIGS on primary.t", res.ConfigErrors)
	}
	if !reflect.DeepEqual(res.ConfigUpdated, []string{"primary.u"}) {
		t.Errorf("ConfigUpdated = %q, want [primary.u]: the other topic is still synced", res.ConfigUpdated)
	}
}

// TestSyncConfigDeletions checks that a key deleted on the source is
// deleted on the target even when the first attempt fails, and that a
// Syncer that never saw a key on the source (kmirror restarted) leaves it
// on the target, as it cannot tell it from a key set there by hand.
func TestSyncConfigDeletions(t *testing.T) {
	e := newEnv(t)
	e.create(t, e.srcOp, "t", 1, map[string]*string{"segment.bytes": kadm.StringPtr("1048576"), "retention.ms": kadm.StringPtr("1000")})
	s := e.syncer(t, "")
	e.syncUntil(t, s, "creating nothing", func(r Result) bool { return len(r.Created) == 0 })

	e.alter(t, e.srcOp, "t", del("segment.bytes"))
	fault := e.dstCluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.IncrementalAlterConfigs}, Resource: "primary.t", Err: kerr.PolicyViolation, Count: -1})
	if res := e.pass(t, s); len(res.ConfigErrors) != 1 {
		t.Fatalf("ConfigErrors = %v, want the refused deletion", res.ConfigErrors)
	}
	fault.Remove()
	if res := e.pass(t, s); !reflect.DeepEqual(res.ConfigUpdated, []string{"primary.t"}) {
		t.Fatalf("ConfigUpdated = %q, want the deletion retried", res.ConfigUpdated)
	}
	if got, want := e.dynamicConfigs(t, e.dstOp, "primary.t"), map[string]string{"retention.ms": "1000"}; !reflect.DeepEqual(got, want) {
		t.Errorf("primary.t configs = %v, want %v", got, want)
	}

	// Deleted on the source while no Syncer ran: the new one keeps it.
	e.alter(t, e.dstOp, "primary.t", set("segment.bytes", "2097152"))
	e.alter(t, e.srcOp, "t", set("retention.ms", "2000"))
	s = e.syncer(t, "")
	res := e.pass(t, s)
	if !reflect.DeepEqual(res.ConfigUpdated, []string{"primary.t"}) {
		t.Fatalf("ConfigUpdated = %q, want primary.t", res.ConfigUpdated)
	}
	if got, want := e.dynamicConfigs(t, e.dstOp, "primary.t"), map[string]string{"retention.ms": "2000", "segment.bytes": "2097152"}; !reflect.DeepEqual(got, want) {
		t.Errorf("primary.t configs = %v, want %v", got, want)
	}
}

// TestSyncConfigRequestFailure checks that a DescribeConfigs request that
// fails as a whole is one problem, logged once, not one per topic.
func TestSyncConfigRequestFailure(t *testing.T) {
	e := newEnv(t)
	e.create(t, e.srcOp, "t", 1, nil)
	e.create(t, e.srcOp, "u", 1, nil)
	l := &logs{}
	s := e.syncer(t, "")
	s.logger = slog.New(l)
	res := e.syncUntil(t, s, "creating nothing", func(r Result) bool { return len(r.Created) == 0 })

	canceled, cancel := context.WithCancel(e.ctx)
	cancel()
	_, errs, reqErr := describeConfigs(canceled, s.srcCl, []string{"t", "u"})
	if reqErr == nil || errs["t"] != reqErr || errs["u"] != reqErr {
		t.Fatalf("describeConfigs with a canceled context: errs %v, reqErr %v; want the request's error for each topic", errs, reqErr)
	}
	for range 3 {
		var r Result
		s.syncConfigs(e.ctx, res.Ready, nil, nil, errs, reqErr, &r)
		if len(r.ConfigErrors) != 1 || !errors.Is(r.ConfigErrors[0], context.Canceled) {
			t.Fatalf("ConfigErrors = %v, want one for the failed request", r.ConfigErrors)
		}
	}
	if n := l.count("cannot describe topic configs", "cluster=source"); n != 1 {
		t.Errorf("failed request logged %d times over 3 passes, want once; log:\n%s", n, l)
	}
	if n := l.count("cannot bring target topic configs in step"); n != 0 {
		t.Errorf("per-topic problems logged %d times for a failed request, want none; log:\n%s", n, l)
	}
	if r := e.pass(t, s); len(r.ConfigErrors) != 0 || len(s.requestProblems) != 0 {
		t.Errorf("pass after the failure: ConfigErrors = %v, requestProblems = %v; want none", r.ConfigErrors, s.requestProblems)
	}
}
