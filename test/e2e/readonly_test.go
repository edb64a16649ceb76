package e2e

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/verify"
	"github.com/kmirror/kmirror/test/kafkaproc"
	"github.com/kmirror/kmirror/test/kafkatest"
)

// readOnlyGrants are the ACLs docs/security.md lists for kmirror's
// principal on a source it only reads, with the default configuration:
// topics are the prefix of the replicated topics, groups that of the
// groups whose offsets are synced.
func readOnlyGrants(principal, topics, groups string) map[string]*kadm.ACLBuilder {
	return map[string]*kadm.ACLBuilder{
		"READ, DESCRIBE, DESCRIBE_CONFIGS on the replicated topics": kadm.NewACLs().Allow(principal).
			Topics(topics).ResourcePatternType(kadm.ACLPatternPrefixed).
			Operations(kadm.OpRead, kadm.OpDescribe, kadm.OpDescribeConfigs),
		"DESCRIBE on the synced groups": kadm.NewACLs().Allow(principal).
			Groups(groups).ResourcePatternType(kadm.ACLPatternPrefixed).
			Operations(kadm.OpDescribe),
		"READ, DESCRIBE on the __kmirror. topics": kadm.NewACLs().Allow(principal).
			Topics("__kmirror.").ResourcePatternType(kadm.ACLPatternPrefixed).
			Operations(kadm.OpRead, kadm.OpDescribe),
	}
}

// TestReadOnlySource runs the default configuration (heartbeats on, group
// offset sync on, config sync on) against a source with the
// StandardAuthorizer on, as a SCRAM user granted only the read-only set
// of readOnlyGrants there: records are replicated and verified, the
// group's committed offset reaches the target, a config changed on the
// source follows on the target, heartbeats arrive, no authorization error
// is logged or counted, nothing is written to the source, and `kmirror
// check` passes and prints the read-only set.
func TestReadOnlySource(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	kafkatest.RequireLibs(t)
	const (
		user     = "reader"
		password = "readonly-test-password-41f9"
		mech     = "SCRAM-SHA-512"
		topic    = "orders.eu"
		target   = "src.orders.eu"
		group    = "app-billing"
		n        = 300
	)
	var src, dst *kafkatest.Cluster
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		src = kafkatest.Start(t, kafkatest.Options{
			Name:       "source",
			Authorizer: true,
			Listeners: []kafkatest.Listener{{Name: "SASL", Protocol: "SASL_PLAINTEXT",
				Props: kafkaproc.With(kafkatest.ScramProps(mech))}},
			FormatArgs: kafkatest.ScramUser(mech, user, password),
		})
	}()
	dst = kafkatest.Start(t, kafkatest.Options{Name: "target"})
	wg.Wait()
	if src == nil || t.Failed() {
		t.FailNow()
	}
	p := &pair{src: src, dst: dst, srcCl: newClient(t, src.Bootstrap()), dstCl: newClient(t, dst.Bootstrap())}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	srcAdm, dstAdm := kadm.NewClient(p.srcCl), kadm.NewClient(p.dstCl)

	principal := "User:" + user
	for what, b := range readOnlyGrants(principal, "orders.", "app-") {
		res, err := srcAdm.CreateACLs(ctx, b)
		if err == nil {
			for _, r := range res {
				if r.Err != nil {
					err = r.Err
				}
			}
		}
		if err != nil {
			t.Fatalf("granting %s: %v", what, err)
		}
	}

	createTopic(t, p.srcCl, topic, 2, map[string]string{"retention.ms": "86400000"})
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: topic, Partition: int32(i % 2), Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprintf("order-%d", i))}
	}
	produce(t, p.srcCl, recs)
	committed := kadm.Offsets{}
	committed.Add(kadm.Offset{Topic: topic, Partition: 0, At: 100, LeaderEpoch: -1})
	committed.Add(kadm.Offset{Topic: topic, Partition: 1, At: 150, LeaderEpoch: -1})
	if _, err := srcAdm.CommitOffsets(ctx, group, committed); err != nil {
		t.Fatalf("committing group %s on the source: %v", group, err)
	}

	httpAddr := freeAddr(t)
	// The default configuration: nothing but the clusters and the flow's
	// topics.
	cfg := writeConfig(t, fmt.Sprintf(`clusters:
  src:
    bootstrap_servers: [%q]
    sasl: {mechanism: %s, username: %s, password: "${KMIRROR_RO_PASSWORD}"}
  dst:
    bootstrap_servers: [%q]
flows:
  - name: ro
    source: src
    target: dst
    topics: ["orders\\..*"]
    groups: ["app-.*"]
http:
  listen: %q
`, src.ListenerAddr("SASL"), mech, user, dst.Bootstrap(), httpAddr))
	setEnv(t, "KMIRROR_RO_PASSWORD", password)

	out, code, took := runCheck(t, "--config", cfg)
	t.Logf("kmirror check: exit %d in %s:\n%s", code, took.Round(time.Millisecond), out)
	if code != 0 || strings.Contains(out, "MISSING") {
		t.Errorf("kmirror check with the read-only set: want exit 0 and nothing MISSING, got %d:\n%s", code, out)
	}
	for _, want := range []string{"Read-only ACLs for User:reader on src", `READ, DESCRIBE on topics prefixed "__kmirror."`} {
		if !strings.Contains(out, want) {
			t.Errorf("kmirror check does not print %q:\n%s", want, out)
		}
	}

	// A flow into the source: check probes READ on its progress topic
	// there, which the read-only set grants.
	createTopic(t, p.srcCl, "__kmirror.back.progress", 1, map[string]string{"cleanup.policy": "compact"})
	both := writeConfig(t, fmt.Sprintf(`clusters:
  src:
    bootstrap_servers: [%q]
    sasl: {mechanism: %s, username: %s, password: "${KMIRROR_RO_PASSWORD}"}
  dst:
    bootstrap_servers: [%q]
flows:
  - name: ro
    source: src
    target: dst
    topics: ["orders\\..*"]
    groups: ["app-.*"]
  - name: back
    source: dst
    target: src
    topics: ["nothing"]
`, src.ListenerAddr("SASL"), mech, user, dst.Bootstrap()))
	out, _, _ = runCheck(t, "--config", both, "--allow-empty")
	for _, want := range []string{`ok  src DESCRIBE on topic "__kmirror.back.progress"`, `ok  src READ on topic "__kmirror.back.progress"`} {
		if !strings.Contains(out, want) {
			t.Errorf("kmirror check with a flow into the source does not print %q:\n%s", want, out)
		}
	}
	// With the progress topic of "back" created above, the source must stay
	// as it is from here on.
	srcTopicsBefore := topicNames(t, srcAdm)

	k := startKmirror(t, cfg, httpAddr)
	took = waitFor(t, 2*time.Minute, "every record on the target", func() (bool, string) {
		got := sum(endOffsets(t, p.dstCl, target))
		return got == n, fmt.Sprintf("target %s has %d of %d; kmirror: %s", target, got, n, lastLines(k.output(), 3))
	})
	t.Logf("%d records replicated %s after start", n, took.Round(time.Millisecond))
	rep, err := verify.Compare(ctx, p.srcCl, p.dstCl, []verify.Pair{{Source: topic, Target: target}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range rep.Topics {
		t.Logf("%s -> %s: source %d, target %d, matched %d", tr.Source, tr.Target, tr.SourceRecords, tr.TargetRecords, tr.Matched)
		if !tr.OK() || tr.SourceRecords != n {
			t.Errorf("%s: target differs from source: %v", tr.Source, tr.Mismatches)
		}
	}

	// Group offset sync: the source group's committed offsets reach the
	// target group, translated (the same numbers: the target holds
	// exactly the source's records).
	waitFor(t, time.Minute, "group "+group+" committed on the target", func() (bool, string) {
		off, err := dstAdm.FetchOffsets(ctx, group)
		if err != nil {
			return false, err.Error()
		}
		o0, ok0 := off.Lookup(target, 0)
		o1, ok1 := off.Lookup(target, 1)
		return ok0 && ok1 && o0.At == 100 && o1.At == 150, fmt.Sprintf("target group offsets: p0 %v, p1 %v", o0.At, o1.At)
	})

	// Config sync: the target got the source's retention, and follows a
	// change on the source.
	waitFor(t, time.Minute, "retention.ms on the target", func() (bool, string) {
		v := topicConfig(t, dstAdm, target, "retention.ms")
		return v == "86400000", "retention.ms = " + v
	})
	if _, err := srcAdm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: kadm.StringPtr("172800000")}}, topic); err != nil {
		t.Fatal(err)
	}
	took = waitFor(t, time.Minute, "the changed retention.ms on the target", func() (bool, string) {
		v := topicConfig(t, dstAdm, target, "retention.ms")
		return v == "172800000", "retention.ms = " + v
	})
	t.Logf("config change followed on the target after %s", took.Round(time.Millisecond))

	// Heartbeats: written to the target, so fresh there.
	waitFor(t, 30*time.Second, "a fresh heartbeat", func() (bool, string) {
		_, body, err := k.get("/metrics")
		age, ok := metricValue(body, `kmirror_heartbeat_age_seconds{flow="ro"}`)
		_, seen := metricValue(body, `kmirror_heartbeat_latency_seconds{flow="ro"}`)
		return err == nil && ok && seen && age < 5, fmt.Sprintf("age %v (present %v), latency present %v, err %v", age, ok, seen, err)
	})
	if got := sum(endOffsets(t, p.dstCl, "heartbeats")); got == 0 {
		t.Errorf("no heartbeat in the target's heartbeats topic")
	}

	// Nothing refused, nothing written to the source.
	_, body, err := k.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := metricValue(body, `kmirror_errors_total{flow="ro",kind="authorization"}`); v != 0 {
		t.Errorf(`kmirror_errors_total{kind="authorization"} = %v, want 0`, v)
	}
	for _, kind := range []string{"heartbeat", "config_sync", "group_sync", "topic_sync"} {
		if v, _ := metricValue(body, fmt.Sprintf(`kmirror_errors_total{flow="ro",kind=%q}`, kind)); v != 0 {
			t.Errorf("kmirror_errors_total{kind=%q} = %v, want 0", kind, v)
		}
	}
	denied := regexp.MustCompile(`(?i)not authorized|authorization failed|AUTHORIZATION_FAILED`)
	if m := denied.FindString(k.output()); m != "" {
		t.Errorf("kmirror logged an authorization error (%q):\n%s", m, k.output())
	}
	if after := topicNames(t, srcAdm); after != srcTopicsBefore {
		t.Errorf("the source's topics changed: before %s, after %s", srcTopicsBefore, after)
	}
	t.Logf("source topics unchanged: %s", srcTopicsBefore)
	k.stop()

	// Without READ on the topics, check names the missing permission.
	del := kadm.NewACLs().Allow(principal).AllowHosts().Topics("orders.").ResourcePatternType(kadm.ACLPatternPrefixed).Operations(kadm.OpRead)
	if _, err := srcAdm.DeleteACLs(ctx, del); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "check to report READ missing", func() (bool, string) {
		out, code, _ = runCheck(t, "--config", cfg)
		return code == 1 && strings.Contains(out, `MISSING src READ on topic "orders.eu"`) &&
			strings.Contains(out, `cluster "src": not authorized: READ on topic "orders.eu" (principal User:reader)`), out
	})
}

// topicConfig returns the value of config key of topic.
func topicConfig(t *testing.T, adm *kadm.Client, topic, key string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return "error: " + err.Error()
	}
	rc, err := rcs.On(topic, nil)
	if err != nil {
		return "error: " + err.Error()
	}
	for _, c := range rc.Configs {
		if c.Key == key {
			return c.MaybeValue()
		}
	}
	return ""
}

// topicNames lists the topics of a cluster, internal ones included.
func topicNames(t *testing.T, adm *kadm.Client) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	td, err := adm.ListTopicsWithInternal(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := td.Names()
	slices.Sort(names)
	return fmt.Sprint(names)
}
