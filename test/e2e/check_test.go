package e2e

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/test/kafkaproc"
	"github.com/kmirror/kmirror/test/kafkatest"
)

// runCheck runs `kmirror check` with args and returns its output, exit
// code and duration.
func runCheck(t *testing.T, args ...string) (string, int, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := command(ctx, t, append([]string{"check"}, args...)...).CombinedOutput()
	took := time.Since(start)
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("kmirror check: %v\n%s", err, out)
	}
	return string(out), code, took
}

// snapshot describes a cluster's topics (partitions and explicit configs)
// and groups, to compare before and after a check.
func snapshot(t *testing.T, cl *kgo.Client) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	topics, err := adm.ListTopicsWithInternal(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	names := topics.Names()
	sort.Strings(names)
	rcs, err := adm.DescribeTopicConfigs(ctx, names...)
	if err != nil {
		t.Fatal(err)
	}
	configs := map[string][]string{}
	for _, rc := range rcs {
		for _, c := range rc.Configs {
			if c.Source == 1 { // DYNAMIC_TOPIC_CONFIG
				configs[rc.Name] = append(configs[rc.Name], c.Key+"="+c.MaybeValue())
			}
		}
		slices.Sort(configs[rc.Name])
	}
	for _, n := range names {
		fmt.Fprintf(&b, "topic %s partitions=%d configs=%v\n", n, len(topics[n].Partitions), configs[n])
	}
	groups, err := adm.ListGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gs := groups.Groups()
	sort.Strings(gs)
	fmt.Fprintf(&b, "groups %v\n", gs)
	return b.String()
}

// TestCheck runs `kmirror check` on (a) a config with a mistyped topics
// regex, (b) a target where kmirror's SCRAM user lacks CREATE on the topic
// it would create, (c) a cluster that does not answer, and (d) a good
// config, whose plan is printed while neither cluster changes.
func TestCheck(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	kafkatest.RequireLibs(t)
	const (
		user     = "kmirror"
		password = "check-test-password-7e2a"
		mech     = "SCRAM-SHA-512"
	)
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
	srcCl, dstCl := newClient(t, src.Bootstrap()), newClient(t, dst.Bootstrap())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	createTopic(t, srcCl, "orders", 3, map[string]string{"retention.ms": "3600000"})
	createTopic(t, srcCl, "payments", 1, map[string]string{"retention.ms": "86400000"})
	createTopic(t, dstCl, "src.payments", 1, map[string]string{"retention.ms": "7200000"})
	srcAdm := kadm.NewClient(srcCl)
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: "orders", Partition: 0, At: 0, LeaderEpoch: -1})
	if _, err := srcAdm.CommitOffsets(ctx, "app1", offs); err != nil {
		t.Fatalf("committing group app1: %v", err)
	}

	// kmirror's SCRAM user on the target: everything but CREATE on the
	// data topics.
	dstAdm := kadm.NewClient(dstCl)
	principal := "User:" + user
	for what, b := range map[string]*kadm.ACLBuilder{
		"state topics": kadm.NewACLs().Allow(principal).Topics("__kmirror.").ResourcePatternType(kadm.ACLPatternPrefixed).
			Operations(kadm.OpCreate, kadm.OpDescribe, kadm.OpDescribeConfigs, kadm.OpRead, kadm.OpWrite),
		"data topics": kadm.NewACLs().Allow(principal).Topics("src.").ResourcePatternType(kadm.ACLPatternPrefixed).
			Operations(kadm.OpDescribe, kadm.OpDescribeConfigs, kadm.OpWrite, kadm.OpAlter, kadm.OpAlterConfigs),
		"cluster": kadm.NewACLs().Allow(principal).Clusters().Operations(kadm.OpDescribe, kadm.OpIdempotentWrite),
	} {
		res, err := dstAdm.CreateACLs(ctx, b)
		if err == nil {
			for _, r := range res {
				err = errors.Join(err, r.Err)
			}
		}
		if err != nil {
			t.Fatalf("granting %s: %v", what, err)
		}
	}

	config := func(target, flowExtra string) string {
		return writeConfig(t, fmt.Sprintf(`clusters:
  src:
    bootstrap_servers: [%q]
  dst:
%s
flows:
  - name: chk
    source: src
    target: dst
%s`, src.Bootstrap(), indent(target, "    "), indent(flowExtra, "    ")))
	}
	plainTarget := fmt.Sprintf("bootstrap_servers: [%q]", dst.Bootstrap())
	saslTarget := fmt.Sprintf("bootstrap_servers: [%q]\nsasl: {mechanism: %s, username: %s, password: %q}\nallow_plaintext_sasl: true",
		dst.ListenerAddr("SASL"), mech, user, password)

	beforeSrc, beforeDst := snapshot(t, srcCl), snapshot(t, dstCl)

	t.Run("typo", func(t *testing.T) {
		path := config(plainTarget, "topics: [orders, \"ordrs.*\"]")
		out, code, took := runCheck(t, "--config", path)
		t.Logf("exit %d in %s", code, took.Round(time.Millisecond))
		if code != 1 || !strings.Contains(out, "ordrs.*: WARNING: matches no source topic") ||
			!strings.Contains(out, `topics regex "ordrs.*" matches no topic of cluster "src"`) {
			t.Errorf("want exit 1 naming the regex that matches nothing, got %d:\n%s", code, out)
		}
		out, code, _ = runCheck(t, "--config", path, "--allow-empty")
		if code != 0 || !strings.Contains(out, "ordrs.*") {
			t.Errorf("with --allow-empty: want exit 0 and the warning, got %d:\n%s", code, out)
		}
	})

	t.Run("missing ACL", func(t *testing.T) {
		path := config(saslTarget, "topics: [orders]\nsync_group_offsets: false\nheartbeat_interval: off")
		out, code, took := runCheck(t, "--config", path)
		t.Logf("exit %d in %s", code, took.Round(time.Millisecond))
		want := `cluster "dst": not authorized: CREATE on topic "src.orders" (principal User:kmirror)`
		if code != 1 || !strings.Contains(out, want) || !strings.Contains(out, `MISSING dst CREATE on topic "src.orders"`) {
			t.Errorf("want exit 1 and %q, got %d:\n%s", want, code, out)
		}
		// What was granted is reported as such.
		if !strings.Contains(out, `ok  dst DESCRIBE_CONFIGS on topic "src.payments"`) && !strings.Contains(out, `ok  dst CREATE on topic "__kmirror.chk.progress"`) {
			t.Errorf("the granted permissions are not shown ok:\n%s", out)
		}
	})

	t.Run("unreachable", func(t *testing.T) {
		closed := freeAddr(t) // nothing listens there
		path := writeConfig(t, fmt.Sprintf(`clusters:
  src:
    bootstrap_servers: [%q]
  gone:
    bootstrap_servers: [%q]
    dial_timeout: 2s
flows:
  - source: src
    target: gone
`, src.Bootstrap(), closed))
		out, code, took := runCheck(t, "--config", path)
		t.Logf("exit %d in %s", code, took.Round(time.Millisecond))
		if code != 1 || !strings.Contains(out, "gone: UNREACHABLE") || !strings.Contains(out, closed) {
			t.Errorf("want exit 1 naming the unreachable cluster and its address, got %d:\n%s", code, out)
		}
		if took > 2*time.Second+5*time.Second {
			t.Errorf("check took %s with dial_timeout 2s", took)
		}
	})

	t.Run("good", func(t *testing.T) {
		path := config(plainTarget, "topics: [orders, \"pay.*\"]")
		out, code, took := runCheck(t, "--config", path)
		t.Logf("exit %d in %s", code, took.Round(time.Millisecond))
		for _, want := range []string{
			"src: reachable", "dst: reachable",
			"orders: orders", "pay.*: payments",
			"Topics to create on dst: 1",
			"src.orders (from orders): 3 partitions, configs retention.ms=3600000",
			"Topics already on dst: 1",
			"config sync would change: retention.ms: 7200000 -> 86400000",
			"__kmirror.chk.progress (would be created)",
			"Heartbeat topic: heartbeats on dst (would be created)",
			"Read-only ACLs for User:ANONYMOUS on src (all this flow needs there):",
			"Groups to sync: app1",
			"Check passed; nothing was changed on any cluster.",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("missing %q in:\n%s", want, out)
			}
		}
		if code != 0 {
			t.Errorf("exit %d, want 0:\n%s", code, out)
		}
		jsonOut, code, _ := runCheck(t, "--config", path, "--json")
		if code != 0 || !strings.Contains(jsonOut, `"Target": "src.orders"`) {
			t.Errorf("--json: exit %d:\n%s", code, jsonOut)
		}
	})

	afterSrc, afterDst := snapshot(t, srcCl), snapshot(t, dstCl)
	if afterSrc != beforeSrc {
		t.Errorf("the source changed:\nbefore:\n%s\nafter:\n%s", beforeSrc, afterSrc)
	}
	if afterDst != beforeDst {
		t.Errorf("the target changed:\nbefore:\n%s\nafter:\n%s", beforeDst, afterDst)
	}
	if strings.Contains(afterSrc+afterDst, "__kmirror") || strings.Contains(afterSrc+afterDst, "topic heartbeats") {
		t.Errorf("a kmirror topic or group was created:\n%s\n%s", afterSrc, afterDst)
	}
	t.Logf("source before and after:\n%starget before and after:\n%s", afterSrc, afterDst)
}
