package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/test/certs"
	"github.com/kmirror/kmirror/test/kafkaproc"
	"github.com/kmirror/kmirror/test/kafkatest"
)

// secrets collects everything a security test printed or served, so that
// it can be searched for the secrets the test used.
type secrets struct {
	mu       sync.Mutex
	values   []string // must never appear
	captured []string // "what: text"
}

func (s *secrets) capture(what, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.captured = append(s.captured, what+": "+text)
}

// check fails the test for every captured text holding a secret, and
// logs how much it searched.
func (s *secrets) check(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	lines := 0
	for _, c := range s.captured {
		lines += strings.Count(c, "\n") + 1
		for _, v := range s.values {
			if strings.Contains(c, v) {
				t.Errorf("a secret (%d bytes) is printed in %q", len(v), firstLine(c))
			}
		}
	}
	t.Logf("searched %d captured texts (%d lines) for %d secrets: none found unless reported above", len(s.captured), lines, len(s.values))
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// pki is the certificates of a security test, as files.
type pki struct {
	dir                 string
	ca1, ca2, untrusted *certs.CA
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	var err error
	for _, ca := range []struct {
		dst  **certs.CA
		name string
	}{{&p.ca1, "CA one"}, {&p.ca2, "CA two"}, {&p.untrusted, "untrusted CA"}} {
		if *ca.dst, err = certs.NewCA(ca.name); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// leaf issues a certificate of ca and writes it as name*.pem.
func (p *pki) leaf(t *testing.T, ca *certs.CA, name string, client bool) certs.Files {
	t.Helper()
	l, err := ca.Issue(name, certs.Options{Client: client, Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.Write(p.dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// caFile writes the certificates of cas into name.pem.
func (p *pki) caFile(t *testing.T, name string, cas ...*certs.CA) string {
	t.Helper()
	var b bytes.Buffer
	for _, ca := range cas {
		b.Write(ca.PEM)
	}
	path := filepath.Join(p.dir, name+".pem")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// copyFile replaces dst with src's content.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestSecurity replicates from a source reached over SASL_SSL with
// SCRAM-SHA-512 to a target reached over TLS with a client certificate
// (mutual TLS), record for record; shows that a wrong password, a missing
// client certificate and an untrusted CA each stop kmirror with one clear
// line; rotates the target's certificates (broker and client, to a new
// CA) mid-run and sees kmirror report the TLS failure, then use the
// rotated files without a restart; and finds none of the secrets it used
// in anything kmirror printed or served.
func TestSecurity(t *testing.T) {
	t.Parallel() // its one bound on a duration (a refused connection fails within 15 s) is met in under a second: runs beside the other parallel tests
	kafkatest.RequireLibs(t)
	pk := newPKI(t)
	const user = "kmirror"
	password := "scram-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-Pw"
	wrongPassword := "wrong-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-Pw"
	sec := &secrets{values: []string{password, wrongPassword}}

	ca1File := pk.caFile(t, "ca1", pk.ca1)
	srcBroker := pk.leaf(t, pk.ca1, "source-broker", false)
	dstBroker := pk.leaf(t, pk.ca1, "target-broker", false)
	// The target trusts client certificates of this file's CAs; the
	// rotation replaces it.
	dstTrust := pk.caFile(t, "target-trust", pk.ca1)
	// kmirror's files for the target, rotated in place later.
	client1 := pk.leaf(t, pk.ca1, "kmirror-client", true)
	kmCA := pk.caFile(t, "kmirror-target-ca", pk.ca1)
	for _, f := range []string{client1.Key} {
		data, _ := os.ReadFile(f)
		sec.values = append(sec.values, strings.TrimSpace(string(data[40:100]))) // a piece of the private key
	}

	var src, dst *kafkatest.Cluster
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		src = kafkatest.Start(t, kafkatest.Options{
			Name: "source",
			Listeners: []kafkatest.Listener{{Name: "SASL_SSL", Protocol: "SASL_SSL",
				Props: kafkaproc.With(kafkatest.TLSProps(srcBroker.Keystore, ""), kafkatest.ScramProps("SCRAM-SHA-512"))}},
			FormatArgs: kafkatest.ScramUser("SCRAM-SHA-512", user, password),
		})
	}()
	dst = kafkatest.Start(t, kafkatest.Options{
		Name:      "target",
		Listeners: []kafkatest.Listener{{Name: "MTLS", Protocol: "SSL", Props: kafkatest.TLSProps(dstBroker.Keystore, dstTrust)}},
	})
	wg.Wait()
	if src == nil || t.Failed() {
		t.FailNow()
	}
	p := &pair{src: src, dst: dst, srcCl: newClient(t, src.Bootstrap()), dstCl: newClient(t, dst.Bootstrap())}

	const topic = "orders"
	createTopic(t, p.srcCl, topic, 3, nil)
	produceBatch := func(from, n int) {
		recs := make([]*kgo.Record, 0, n)
		for i := from; i < from+n; i++ {
			recs = append(recs, &kgo.Record{
				Topic: topic, Partition: int32(i % 3),
				Key:     []byte("k" + strconv.Itoa(i)),
				Value:   []byte(fmt.Sprintf("order-%d", i)),
				Headers: []kgo.RecordHeader{{Key: "h", Value: []byte(strconv.Itoa(i))}},
			})
		}
		produce(t, p.srcCl, recs)
	}
	produceBatch(0, 3000)

	setEnv(t, "KMIRROR_E2E_SOURCE_PASSWORD", password)
	setEnv(t, "KMIRROR_E2E_WRONG_PASSWORD", wrongPassword)
	config := func(httpAddr, passwordVar, dstTLS string) string {
		return fmt.Sprintf(`clusters:
  src:
    bootstrap_servers: [%q]
    tls: {ca_file: %q}
    sasl: {mechanism: SCRAM-SHA-512, username: %s, password: "${%s}"}
  dst:
    bootstrap_servers: [%q]
    tls: %s
flows:
  - name: secure
    source: src
    target: dst
    topics: [%q]
http:
  listen: %q
`, src.ListenerAddr("SASL_SSL"), ca1File, user, passwordVar, dst.ListenerAddr("MTLS"), dstTLS, topic, httpAddr)
	}
	goodDstTLS := fmt.Sprintf("{ca_file: %q, cert_file: %q, key_file: %q}", kmCA, client1.Cert, client1.Key)

	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct {
			name, passwordVar, dstTLS string
			want                      []string
		}{
			{"wrong password", "KMIRROR_E2E_WRONG_PASSWORD", goodDstTLS,
				[]string{`cluster "src"`, "authentication failed", "SCRAM-SHA-512", `user "kmirror"`}},
			{"missing client certificate", "KMIRROR_E2E_SOURCE_PASSWORD", fmt.Sprintf("{ca_file: %q}", kmCA),
				[]string{`cluster "dst"`, "TLS handshake refused by the broker", "client certificate"}},
			{"untrusted CA", "KMIRROR_E2E_SOURCE_PASSWORD",
				fmt.Sprintf("{ca_file: %q, cert_file: %q, key_file: %q}", pk.caFile(t, "untrusted", pk.untrusted), client1.Cert, client1.Key),
				[]string{`cluster "dst"`, "TLS handshake failed", "not trusted", "unknown authority"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				path := writeConfig(t, config(freeAddr(t), tc.passwordVar, tc.dstTLS))
				res := runKmirrorOnce(t, 60*time.Second, "run", "--config", path)
				sec.capture("kmirror run ("+tc.name+") stdout", res.stdout)
				sec.capture("kmirror run ("+tc.name+") stderr", res.stderr)
				if res.timedOut || res.code != 1 {
					t.Fatalf("exit code %d (timed out %t) after %v, want 1:\n%s", res.code, res.timedOut, res.elapsed, res.stderr)
				}
				var last string
				for _, l := range strings.Split(strings.TrimSpace(res.stderr), "\n") {
					if strings.HasPrefix(l, "kmirror: ") {
						last = l
					}
				}
				for _, w := range tc.want {
					if !strings.Contains(last, w) {
						t.Errorf("error line %q lacks %q", last, w)
					}
				}
				if strings.Contains(last, "unreachable") || strings.Contains(last, ": EOF") {
					t.Errorf("error line %q blames the network", last)
				}
				if res.elapsed > 15*time.Second {
					t.Errorf("failed after %v, want within 15s", res.elapsed)
				}
				t.Logf("%s: exit 1 after %v: %s", tc.name, res.elapsed.Round(time.Millisecond), last)
			})
		}
	})

	httpAddr := freeAddr(t)
	k := startKmirror(t, writeConfig(t, config(httpAddr, "KMIRROR_E2E_SOURCE_PASSWORD", goodDstTLS)), httpAddr)
	defer func() { sec.capture("kmirror run output", k.output()) }()
	serve := func(path string) (int, string) {
		code, body, err := k.get(path)
		if err == nil {
			sec.capture(path, body)
		}
		return code, body
	}
	target := "src." + topic
	waitCount := func(n int64) {
		t.Helper()
		waitFor(t, 3*time.Minute, fmt.Sprintf("%d records in %s", n, target), func() (bool, string) {
			got := sum(endOffsets(t, p.dstCl, target))
			return got >= n, fmt.Sprintf("%d records", got)
		})
	}
	waitCount(3000)
	compareTopics(t, p, topic, target)
	t.Logf("replicated 3000 records over SASL_SSL (SCRAM-SHA-512) to mutual TLS, record for record")
	serve("/api/flows")
	serve("/metrics")

	// Rotation: the target's broker moves to CA two (its certificate and
	// the client certificates it trusts) and restarts. kmirror still holds
	// CA one's files: its connections fail, reported as TLS.
	copyFile(t, pk.leaf(t, pk.ca2, "target-broker-2", false).Keystore, dstBroker.Keystore)
	copyFile(t, pk.caFile(t, "ca2", pk.ca2), dstTrust)
	dst.Restart()
	produceBatch(3000, 1000)
	waitFor(t, 60*time.Second, "/readyz to report the TLS failure", func() (bool, string) {
		code, body := serve("/readyz")
		return code == 503 && strings.Contains(body, "target: ") && strings.Contains(body, "TLS"), fmt.Sprintf("%d %q", code, body)
	})
	_, metrics := serve("/metrics")
	if v, ok := metricValue(metrics, `kmirror_errors_total{flow="secure",kind="tls"}`); !ok || v < 1 {
		t.Errorf("kmirror_errors_total{kind=\"tls\"} = %v (found %v), want at least 1", v, ok)
	}
	if !strings.Contains(k.output(), "TLS with cluster failed; retrying") {
		t.Errorf("no log line for the TLS failure")
	}
	// kmirror's files rotate on disk (as cert-manager would); the next
	// connection uses them, without a restart.
	client2 := pk.leaf(t, pk.ca2, "kmirror-client-2", true)
	copyFile(t, client2.Key, client1.Key)
	copyFile(t, client2.Cert, client1.Cert)
	copyFile(t, pk.caFile(t, "ca2-for-kmirror", pk.ca2), kmCA)
	took := time.Now()
	waitCount(4000)
	t.Logf("after rotation: 1000 more records replicated %v after the files changed, same process", time.Since(took).Round(time.Millisecond))
	compareTopics(t, p, topic, target)
	waitFor(t, 60*time.Second, "/readyz to be ready again", func() (bool, string) {
		code, body := serve("/readyz")
		return code == 200, fmt.Sprintf("%d %q", code, body)
	})
	select {
	case <-k.done:
		t.Fatal("kmirror exited during the rotation")
	default:
	}
	serve("/api/flows")
	serve("/metrics")
	k.stop()
	sec.capture("kmirror run output", k.output())
	sec.check(t)
}

// compareTopics checks that target holds the records of source, partition
// by partition, in order, with the same key, value, headers and
// timestamp.
func compareTopics(t *testing.T, p *pair, source, target string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, d := readLog(t, ctx, p.srcCl, source), readLog(t, ctx, p.dstCl, target)
	n := 0
	for part, recs := range s {
		got := d[part]
		if len(got) != len(recs) {
			t.Fatalf("partition %d: %d records in the target, %d in the source", part, len(got), len(recs))
		}
		for i, r := range recs {
			g := got[i]
			if !bytes.Equal(r.Key, g.Key) || !bytes.Equal(r.Value, g.Value) || !r.Timestamp.Equal(g.Timestamp) ||
				len(r.Headers) != len(g.Headers) || (len(r.Headers) > 0 && !bytes.Equal(r.Headers[0].Value, g.Headers[0].Value)) {
				t.Fatalf("partition %d offset %d: target %q=%q, source %q=%q", part, i, g.Key, g.Value, r.Key, r.Value)
			}
			n++
		}
	}
	t.Logf("compared %d records, record for record", n)
}

// TestSecretInConfigError runs kmirror on configurations that use an
// environment variable holding a secret in keys that are not secrets, with
// a value those keys refuse, and finds the secret in none of its output:
// a config error shows the ${VAR} name, never its value.
func TestSecretInConfigError(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	secret := "cfg-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-Secret"
	setEnv(t, "KMIRROR_E2E_CONFIG_SECRET", secret)
	sec := &secrets{values: []string{secret}}
	for _, tc := range []struct{ name, body string }{
		{"replication_factor", "clusters:\n  a: {bootstrap_servers: [\"127.0.0.1:1\"]}\n  b: {bootstrap_servers: [\"127.0.0.1:2\"]}\n" +
			"flows:\n  - {source: a, target: b, replication_factor: \"${KMIRROR_E2E_CONFIG_SECRET}\"}\n"},
		{"bootstrap_servers", "clusters:\n  a: {bootstrap_servers: [\"${KMIRROR_E2E_CONFIG_SECRET}\"]}\n  b: {bootstrap_servers: [\"127.0.0.1:2\"]}\n" +
			"flows:\n  - {source: a, target: b}\n"},
		{"sasl mechanism", "clusters:\n  a:\n    bootstrap_servers: [\"127.0.0.1:1\"]\n    tls: {}\n" +
			"    sasl: {mechanism: \"${KMIRROR_E2E_CONFIG_SECRET}\", username: u, password: \"${KMIRROR_E2E_CONFIG_SECRET}\"}\n" +
			"  b: {bootstrap_servers: [\"127.0.0.1:2\"]}\nflows:\n  - {source: a, target: b}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runKmirrorOnce(t, 30*time.Second, "run", "--config", writeConfig(t, tc.body))
			sec.capture("stdout", res.stdout)
			sec.capture("stderr", res.stderr)
			if res.code != 2 {
				t.Errorf("exit code %d, want 2 (invalid configuration):\n%s", res.code, res.stderr)
			}
			t.Logf("%s", strings.TrimSpace(res.stderr))
		})
	}
	res := runKmirrorOnce(t, 30*time.Second, "run", "--help")
	sec.capture("--help", res.stdout+res.stderr)
	sec.check(t)
}
