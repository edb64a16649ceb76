package e2e

import (
	"context"
	"fmt"
	"regexp"
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

// TestMissingACL runs kmirror against a target with ACLs on, as a SCRAM
// user granted every ACL it needs except WRITE on the data topic: the
// refusal is one clear line naming the cluster, the principal, WRITE and
// the topic (not one per retry), counted as kind "authorization", and
// nothing is written; once WRITE is granted the partition replicates
// again within its backoff and the target equals the source.
func TestMissingACL(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	kafkatest.RequireLibs(t)
	const (
		user     = "kmirror"
		password = "acl-test-password-5c1d"
		mech     = "SCRAM-SHA-512"
		topic    = "orders"
		target   = "src.orders"
		n        = 500
	)
	kafkatest.RequireLibs(t) // skips or fails here, not in a goroutine below
	var src, dst *kafkatest.Cluster
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); src = kafkatest.Start(t, kafkatest.Options{Name: "source"}) }()
	dst = kafkatest.Start(t, kafkatest.Options{
		Name:       "target",
		Authorizer: true,
		Listeners: []kafkatest.Listener{{Name: "SASL", Protocol: "SASL_PLAINTEXT",
			Props: kafkaproc.With(kafkatest.ScramProps(mech))}},
		FormatArgs: kafkatest.ScramUser(mech, user, password),
	})
	wg.Wait()
	if src == nil || t.Failed() {
		t.FailNow()
	}
	p := &pair{src: src, dst: dst, srcCl: newClient(t, src.Bootstrap()), dstCl: newClient(t, dst.Bootstrap())}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	adm := kadm.NewClient(p.dstCl)
	grant := func(what string, b *kadm.ACLBuilder) {
		t.Helper()
		res, err := adm.CreateACLs(ctx, b)
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
	principal := "User:" + user
	grant("the state topics", kadm.NewACLs().Allow(principal).Topics("__kmirror.").ResourcePatternType(kadm.ACLPatternPrefixed).
		Operations(kadm.OpCreate, kadm.OpDescribe, kadm.OpDescribeConfigs, kadm.OpRead, kadm.OpWrite, kadm.OpAlter))
	grant("the state groups", kadm.NewACLs().Allow(principal).Groups("__kmirror.").ResourcePatternType(kadm.ACLPatternPrefixed).
		Operations(kadm.OpRead, kadm.OpDescribe))
	grant("the cluster", kadm.NewACLs().Allow(principal).Clusters().
		Operations(kadm.OpDescribe, kadm.OpIdempotentWrite))
	grant("the heartbeat topic", kadm.NewACLs().Allow(principal).Topics("heartbeats").
		Operations(kadm.OpCreate, kadm.OpDescribe, kadm.OpWrite, kadm.OpRead))
	// Everything on the data topic but WRITE.
	grant("the target topic", kadm.NewACLs().Allow(principal).Topics(target).
		Operations(kadm.OpCreate, kadm.OpDescribe, kadm.OpDescribeConfigs, kadm.OpAlter))

	createTopic(t, p.srcCl, topic, 1, nil)
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprintf("order-%d", i))}
	}
	produce(t, p.srcCl, recs)

	httpAddr := freeAddr(t)
	cfg := writeConfig(t, fmt.Sprintf(`clusters:
  src:
    bootstrap_servers: [%q]
  dst:
    bootstrap_servers: [%q]
    sasl: {mechanism: %s, username: %s, password: "${KMIRROR_ACL_PASSWORD}"}
flows:
  - name: acl
    source: src
    target: dst
    topics: [%q]
    topic_naming: prefix
http:
  listen: %q
`, p.src.Bootstrap(), dst.ListenerAddr("SASL"), mech, user, topic, httpAddr))
	setEnv(t, "KMIRROR_ACL_PASSWORD", password)
	k := startKmirror(t, cfg, httpAddr)

	// One line naming the cluster, the principal, WRITE and the topic.
	want := regexp.MustCompile(`cluster \\?"dst\\?": not authorized: WRITE on topic \\?"` + regexp.QuoteMeta(target) +
		`\\?" \(principal User:kmirror\)`)
	refusedAt := waitFor(t, 2*time.Minute, "the refused WRITE to be logged", func() (bool, string) {
		return want.MatchString(k.output()), lastLines(k.output(), 5)
	})
	t.Logf("refused WRITE logged after %s", refusedAt.Round(time.Millisecond))
	errSeries := `kmirror_errors_total{flow="acl",kind="authorization"}`
	waitFor(t, 30*time.Second, errSeries+" > 0", func() (bool, string) {
		_, body, err := k.get("/metrics")
		v, _ := metricValue(body, errSeries)
		return err == nil && v > 0, fmt.Sprintf("%s = %v (err %v)", errSeries, v, err)
	})
	// The partition is shown failing while it waits.
	waitFor(t, 30*time.Second, "/api/flows to show a failing partition", func() (bool, string) {
		_, body, err := k.get("/api/flows")
		return err == nil && regexp.MustCompile(`"Failing":\s*[1-9]`).MatchString(body), body
	})

	// Retries for ~15 s: still one ERROR line for the refusal, no flood.
	time.Sleep(15 * time.Second)
	var errLines []string
	for _, l := range strings.Split(k.output(), "\n") {
		if want.MatchString(l) && strings.Contains(l, "ERROR") {
			errLines = append(errLines, l)
		}
	}
	if len(errLines) != 1 {
		t.Errorf("want 1 ERROR line for the refused WRITE over ~15 s, got %d:\n%s", len(errLines), strings.Join(errLines, "\n"))
	} else {
		t.Logf("the line: %s", errLines[0])
	}
	_, body, _ := k.get("/metrics")
	v, _ := metricValue(body, errSeries)
	t.Logf("%s = %v after ~15 s of retries", errSeries, v)
	if got := sum(endOffsets(t, p.dstCl, target)); got != 0 {
		t.Errorf("target %s has %d records without WRITE; want 0", target, got)
	}
	if strings.Contains(k.output(), password) {
		t.Errorf("the password appears in kmirror's output")
	}

	// Grant WRITE: replication resumes within the backoff.
	grantedAt := time.Now()
	grant("WRITE on the target topic", kadm.NewACLs().Allow(principal).Topics(target).Operations(kadm.OpWrite))
	waitFor(t, 45*time.Second, "the target to catch up once WRITE is granted", func() (bool, string) {
		got := sum(endOffsets(t, p.dstCl, target))
		return got == n, fmt.Sprintf("target has %d of %d", got, n)
	})
	t.Logf("replicating again %s after WRITE was granted", time.Since(grantedAt).Round(time.Millisecond))
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
	waitFor(t, 30*time.Second, "/api/flows to show no failing partition", func() (bool, string) {
		_, body, err := k.get("/api/flows")
		return err == nil && regexp.MustCompile(`"Failing":\s*0\b`).MatchString(body), body
	})
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(ls[max(0, len(ls)-n):], "\n")
}
