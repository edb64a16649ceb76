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
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/aclsync"
	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/test/kafkaproc"
	"github.com/kmirror/kmirror/test/kafkatest"
)

// TestACLSync runs ACL sync between two brokers with ACLs on, kmirror a
// SCRAM user of the target with exactly the ACLs it needs (not a super
// user), and checks the target's topic and group ACLs exactly after each
// step:
//
//   - without ALTER on the target cluster, the refusal is one ERROR line
//     naming ALTER on the cluster, counted as kind acl_sync; once granted,
//     safe mode copies the MirrorMaker 2 subset (no ALLOW WRITE, ALLOW ALL
//     as READ, DENY kept), topic names prefixed, groups as they are,
//     nothing of an excluded topic, of the cluster or naming kmirror;
//   - restarted in mirror mode, every ACL is copied as it is, and the
//     READs that safe mode made of ALLOW ALL are removed;
//   - ACLs removed on the source go from the target, also when removed
//     while kmirror is stopped (SIGTERM) — except an ACL that was on the
//     target before kmirror, and kmirror's own ACLs, which stay.
func TestACLSync(t *testing.T) {
	kafkatest.RequireLibs(t)
	const (
		user     = "kmirror"
		password = "aclsync-test-password-9e4b"
		mech     = "SCRAM-SHA-512"
		alice    = "User:alice"
		bob      = "User:bob"
		carol    = "User:carol"
		self     = "User:" + user
	)
	begin := time.Now()
	kafkatest.RequireLibs(t) // skips or fails here, not in a goroutine below
	var src, dst *kafkatest.Cluster
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); src = kafkatest.Start(t, kafkatest.Options{Name: "source", Authorizer: true}) }()
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
	t.Logf("clusters up in %s", time.Since(begin).Round(time.Millisecond))
	srcAdm := kadm.NewClient(newClient(t, src.Bootstrap()))
	dstAdm := kadm.NewClient(newClient(t, dst.Bootstrap()))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	type binding = aclsync.Binding
	b := func(res kmsg.ACLResourceType, pat kmsg.ACLResourcePatternType, name, who string, op kmsg.ACLOperation, perm kmsg.ACLPermissionType) binding {
		return binding{Resource: res, Name: name, Pattern: pat, Principal: who, Host: "*", Operation: op, Permission: perm}
	}
	const (
		topic, group      = kmsg.ACLResourceTypeTopic, kmsg.ACLResourceTypeGroup
		literal, prefixed = kmsg.ACLResourcePatternTypeLiteral, kmsg.ACLResourcePatternTypePrefixed
		allow, deny       = kmsg.ACLPermissionTypeAllow, kmsg.ACLPermissionTypeDeny
	)
	change := func(adm *kadm.Client, del bool, bs ...binding) {
		t.Helper()
		for _, x := range bs {
			bl := kadm.NewACLs().ResourcePatternType(x.Pattern).Operations(x.Operation)
			switch x.Resource {
			case topic:
				bl.Topics(x.Name)
			case group:
				bl.Groups(x.Name)
			default:
				bl.Clusters()
			}
			if x.Permission == allow {
				bl.Allow(x.Principal).AllowHosts(x.Host)
			} else {
				bl.Deny(x.Principal).DenyHosts(x.Host)
			}
			var err error
			if del {
				var res kadm.DeleteACLsResults
				if res, err = adm.DeleteACLs(ctx, bl); err == nil && res[0].Err != nil {
					err = res[0].Err
				}
			} else {
				var res kadm.CreateACLsResults
				if res, err = adm.CreateACLs(ctx, bl); err == nil && res[0].Err != nil {
					err = res[0].Err
				}
			}
			if err != nil {
				t.Fatalf("changing %v (delete %v): %v", x, del, err)
			}
		}
	}

	// kmirror on the target: what a flow needs, plus DESCRIBE on the
	// cluster to read ACLs; ALTER (to change them) comes later.
	own := []binding{
		b(topic, prefixed, "__kmirror.", self, kmsg.ACLOperationAll, allow),
		b(group, prefixed, "__kmirror.", self, kmsg.ACLOperationAll, allow),
		b(topic, prefixed, "src.", self, kmsg.ACLOperationAll, allow),
		b(kmsg.ACLResourceTypeCluster, literal, "kafka-cluster", self, kmsg.ACLOperationDescribe, allow),
		b(kmsg.ACLResourceTypeCluster, literal, "kafka-cluster", self, kmsg.ACLOperationIdempotentWrite, allow),
	}
	change(dstAdm, false, own...)
	// On the target before kmirror: the same ACL as one it copies.
	preexisting := b(topic, literal, "src.orders", alice, kmsg.ACLOperationRead, allow)
	change(dstAdm, false, preexisting)

	var (
		readOrders   = b(topic, literal, "orders", alice, kmsg.ACLOperationRead, allow)
		writeOrders  = b(topic, literal, "orders", alice, kmsg.ACLOperationWrite, allow)
		allOrders    = b(topic, literal, "orders", bob, kmsg.ACLOperationAll, allow)
		denyOrders   = b(topic, literal, "orders", carol, kmsg.ACLOperationRead, deny)
		readPay      = b(topic, prefixed, "pay", alice, kmsg.ACLOperationRead, allow)
		readBilling  = b(group, literal, "billing", alice, kmsg.ACLOperationRead, allow)
		allApps      = b(group, prefixed, "app-", bob, kmsg.ACLOperationAll, allow)
		readSecret   = b(topic, literal, "secret", alice, kmsg.ACLOperationRead, allow)
		denyKmirror  = b(topic, literal, "orders", self, kmsg.ACLOperationWrite, deny)
		alterCluster = b(kmsg.ACLResourceTypeCluster, literal, "kafka-cluster", alice, kmsg.ACLOperationAlter, allow)
	)
	change(srcAdm, false, readOrders, writeOrders, allOrders, denyOrders, readPay, readBilling, allApps, readSecret, denyKmirror, alterCluster)

	mapped := func(x binding) binding {
		if x.Resource == topic {
			x.Name = "src." + x.Name
		}
		return x
	}
	asRead := func(x binding) binding { x.Operation = kmsg.ACLOperationRead; return x }
	targetLines := func() []string {
		bs, err := aclsync.Describe(ctx, dstAdm, kafka.Access{})
		if err != nil {
			t.Fatalf("describing the target's ACLs: %v", err)
		}
		var out []string
		for _, x := range bs {
			out = append(out, x.String())
		}
		slices.Sort(out)
		return out
	}
	expect := func(bs ...binding) []string {
		var out []string
		for _, x := range append(bs, own...) {
			if x.Resource == topic || x.Resource == group {
				out = append(out, x.String())
			}
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	waitACLs := func(k *proc, what string, want []string) time.Duration {
		t.Helper()
		return waitFor(t, 30*time.Second, what, func() (bool, string) {
			got := targetLines()
			return slices.Equal(got, want), fmt.Sprintf("target ACLs:\n  %s\nwant:\n  %s\nkmirror:\n%s",
				strings.Join(got, "\n  "), strings.Join(want, "\n  "), lastLines(k.output(), 8))
		})
	}

	httpAddr := freeAddr(t)
	config := func(mode string) string {
		return writeConfig(t, fmt.Sprintf(`clusters:
  src:
    bootstrap_servers: [%q]
  dst:
    bootstrap_servers: [%q]
    sasl: {mechanism: %s, username: %s, password: "${KMIRROR_ACLSYNC_PASSWORD}"}
flows:
  - name: acls
    source: src
    target: dst
    topics_exclude: [secret]
    topic_naming: prefix
    acls: %s
    topic_refresh_interval: 500ms
    sync_group_offsets: false
    heartbeat_interval: "off"
http:
  listen: %q
`, src.Bootstrap(), dst.ListenerAddr("SASL"), mech, user, mode, httpAddr))
	}
	setEnv(t, "KMIRROR_ACLSYNC_PASSWORD", password)
	metric := func(k *proc, series string) float64 {
		_, body, _ := k.get("/metrics")
		v, _ := metricValue(body, series)
		return v
	}

	// Safe mode, first without ALTER on the target cluster.
	k := startKmirror(t, config("safe"), httpAddr)
	refusal := regexp.MustCompile(`ACL sync failed.*cluster \\?"dst\\?": not authorized: ALTER on cluster \(principal User:kmirror\)`)
	took := waitFor(t, 60*time.Second, "the refused ALTER to be logged", func() (bool, string) {
		return refusal.MatchString(k.output()), lastLines(k.output(), 5)
	})
	t.Logf("refused ALTER on the cluster logged %s after start", took.Round(time.Millisecond))
	errSeries := `kmirror_errors_total{flow="acls",kind="acl_sync"}`
	waitFor(t, 10*time.Second, errSeries+" > 1", func() (bool, string) {
		v := metric(k, errSeries)
		return v > 1, fmt.Sprintf("%s = %v", errSeries, v)
	})
	if n := len(refusal.FindAllString(k.output(), -1)); n != 1 {
		t.Errorf("the refusal was logged %d times over %v passes; want once", n, metric(k, errSeries))
	}
	granted := time.Now()
	grantAlter := b(kmsg.ACLResourceTypeCluster, literal, "kafka-cluster", self, kmsg.ACLOperationAlter, allow)
	change(dstAdm, false, grantAlter)
	own = append(own, grantAlter)
	safeSet := []binding{preexisting, mapped(readOrders), asRead(mapped(allOrders)), mapped(denyOrders), mapped(readPay), readBilling, asRead(allApps)}
	waitACLs(k, "the safe set on the target", expect(safeSet...))
	t.Logf("safe: target in step %s after ALTER was granted", time.Since(granted).Round(time.Millisecond))
	if !strings.Contains(k.output(), "ACL sync works again") {
		t.Errorf("recovery not logged")
	}
	// preexisting is alice's READ on orders, mapped: 6 in step, 5 created.
	if v := metric(k, `kmirror_acls_synced{flow="acls"}`); v != 6 {
		t.Errorf("kmirror_acls_synced = %v, want 6", v)
	}
	if v := metric(k, `kmirror_acl_changes_total{flow="acls",op="create"}`); v != 5 {
		t.Errorf(`kmirror_acl_changes_total{op="create"} = %v, want 5 (the pre-existing one is not created)`, v)
	}

	// Mirror mode, same flow restarted.
	k.stop()
	restarted := time.Now()
	k = startKmirror(t, config("mirror"), httpAddr)
	mirrorSet := []binding{preexisting, mapped(readOrders), mapped(writeOrders), mapped(allOrders), mapped(denyOrders), mapped(readPay), readBilling, allApps}
	waitACLs(k, "the mirror set on the target", expect(mirrorSet...))
	t.Logf("mirror: target in step %s after the restart", time.Since(restarted).Round(time.Millisecond))

	// Removed on the source while kmirror runs.
	removed := time.Now()
	change(srcAdm, true, readOrders, writeOrders, allApps)
	waitACLs(k, "the removals on the target", expect(preexisting, mapped(allOrders), mapped(denyOrders), mapped(readPay), readBilling))
	t.Logf("mirror: removals reached the target in %s", time.Since(removed).Round(time.Millisecond))
	// 2 READs safe mode made of ALLOW ALL, then WRITE and app-; the
	// counter follows the deletes the target already shows.
	waitFor(t, 10*time.Second, `kmirror_acl_changes_total{op="delete"} to reach 4`, func() (bool, string) {
		v := metric(k, `kmirror_acl_changes_total{flow="acls",op="delete"}`)
		return v == 4, fmt.Sprint(v)
	})

	// Removed on the source while kmirror is stopped.
	k.stop()
	change(srcAdm, true, denyOrders, readPay)
	restarted = time.Now()
	k = startKmirror(t, config("mirror"), httpAddr)
	waitACLs(k, "the removals made while kmirror was stopped", expect(preexisting, mapped(allOrders), readBilling))
	t.Logf("mirror: removals made while stopped reached the target %s after the restart", time.Since(restarted).Round(time.Millisecond))
	if strings.Contains(k.output(), password) {
		t.Errorf("the password appears in kmirror's output")
	}
	t.Logf("total %s", time.Since(begin).Round(time.Millisecond))
}
