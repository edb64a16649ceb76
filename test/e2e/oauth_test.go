package e2e

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/verify"
	"github.com/kmirror/kmirror/test/certs"
	"github.com/kmirror/kmirror/test/kafkaproc"
	"github.com/kmirror/kmirror/test/kafkatest"
)

// testIDP is an OAuth 2 identity provider: a client-credentials token
// endpoint issuing RS256 JWTs, and the JWKS the broker validates them
// with.
type testIDP struct {
	t        *testing.T
	srv      *httptest.Server
	key      *rsa.PrivateKey
	secret   string
	lifetime atomic.Int64 // seconds
	mode     atomic.Value // "ok", "expired" or "audience"

	mu     sync.Mutex
	issued []string
	times  []time.Time
}

func (p *testIDP) setMode(mode string) { p.mode.Store(mode) }

const idpKeyID = "kmirror-test-key"

func newTestIDP(t *testing.T, secret string) *testIDP {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p := &testIDP{t: t, key: key, secret: secret}
	p.lifetime.Store(3600)
	p.mode.Store("ok")
	mux := http.NewServeMux()
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, _ *http.Request) {
		b64 := base64.RawURLEncoding.EncodeToString
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kty": "RSA", "kid": idpKeyID, "use": "sig", "alg": "RS256",
			"n": b64(key.N.Bytes()), "e": b64(big.NewInt(int64(key.E)).Bytes()),
		}}})
	})
	mux.HandleFunc("/token", p.token)
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

func (p *testIDP) token(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.Method != http.MethodPost || r.ParseForm() != nil || r.PostForm.Get("grant_type") != "client_credentials" ||
		r.PostForm.Get("client_id") != "kmirror" || r.PostForm.Get("client_secret") != p.secret || r.PostForm.Get("scope") != "kafka" {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":"invalid_client","error_description":"unknown client or wrong secret"}`)
		return
	}
	now := time.Now()
	lifetime := p.lifetime.Load()
	claims := map[string]any{
		"iss": p.srv.URL, "sub": "kmirror", "aud": "kafka", "scope": "kafka",
		"iat": now.Unix(), "exp": now.Unix() + lifetime, "jti": fmt.Sprint(now.UnixNano()),
	}
	switch p.mode.Load() {
	case "expired":
		claims["iat"], claims["exp"] = now.Unix()-600, now.Unix()-300
	case "audience":
		claims["aud"] = "some-other-service"
	}
	tok := p.sign(claims)
	p.mu.Lock()
	p.issued = append(p.issued, tok)
	p.times = append(p.times, now)
	p.mu.Unlock()
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": lifetime})
}

// sign returns an RS256 JWT of claims.
func (p *testIDP) sign(claims map[string]any) string {
	b64 := base64.RawURLEncoding.EncodeToString
	header, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": idpKeyID})
	body, _ := json.Marshal(claims)
	input := b64(header) + "." + b64(body)
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, p.key, crypto.SHA256, sum[:])
	if err != nil {
		p.t.Fatal(err)
	}
	return input + "." + b64(sig)
}

func (p *testIDP) tokens() ([]string, []time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.issued...), append([]time.Time(nil), p.times...)
}

// TestOAuthBearer replicates from a SASL_SSL listener whose broker
// validates OAUTHBEARER tokens against the test's JWKS, with tokens from
// the test's client-credentials endpoint: record for record, across token
// refreshes (20 s tokens, the broker re-authenticating each connection at
// its token's expiry); then an expired and a wrong-audience token each
// fail with one clear line within 15 s, and no output holds a secret.
func TestOAuthBearer(t *testing.T) {
	const secret = "oidc-client-s3cret-7f1d"
	idp, c, caFile := startOAuthBroker(t, secret)

	// The source is the OAUTHBEARER listener; the target is the same
	// broker's PLAINTEXT listener (one JVM instead of two).
	setEnv(t, "OIDC_SECRET", secret)
	cfg := func(httpAddr string) string {
		return fmt.Sprintf(`clusters:
  src:
    bootstrap_servers: [%q]
    tls: {ca_file: %q}
    sasl: {mechanism: OAUTHBEARER, token_endpoint: %q, client_id: kmirror, client_secret: "${OIDC_SECRET}", scope: kafka}
  dst:
    bootstrap_servers: [%q]
flows:
  - name: oauth
    source: src
    target: dst
    topics: ["oauth-in"]
    sync_group_offsets: false
http:
  listen: %q
`, c.ListenerAddr("OAUTH"), caFile, idp.srv.URL+"/token", c.Bootstrap(), httpAddr)
	}

	cl := newClient(t, c.Bootstrap())
	const topic, target = "oauth-in", "src.oauth-in"
	createTopic(t, cl, topic, 3, nil)
	l := newLedger(3)
	l.produce(t, cl, topic, 3000)

	idp.lifetime.Store(20)
	httpAddr := freeAddr(t)
	k := startKmirror(t, writeConfig(t, cfg(httpAddr)), httpAddr)
	took := waitFor(t, 3*time.Minute, "the first 3000 records on the target", func() (bool, string) {
		n := sum(endOffsets(t, cl, target))
		return n >= 3000, fmt.Sprintf("%d records", n)
	})
	t.Logf("3000 records over OAUTHBEARER in %s", took.Round(time.Millisecond))

	// Keep producing for 50 s, past two token lifetimes: the broker ends
	// every session when its token expires, and kmirror must bring a
	// fresh token each time without losing a record.
	start := time.Now()
	for time.Since(start) < 50*time.Second {
		l.produce(t, cl, topic, 300)
		time.Sleep(2 * time.Second)
	}
	want := int64(l.total())
	waitFor(t, 2*time.Minute, fmt.Sprintf("%d records on the target", want), func() (bool, string) {
		n := sum(endOffsets(t, cl, target))
		return n >= want, fmt.Sprintf("%d records", n)
	})
	n, ok := checkMirrored(t, cl, l, topic, target)
	tokens, times := idp.tokens()
	t.Logf("%d records replicated record for record over %s; %d tokens of 20 s issued, at %s", n, time.Since(start).Round(time.Second), len(tokens), offsets(times))
	if !ok {
		t.Fatal("the target differs from the source")
	}
	if len(tokens) < 3 {
		t.Errorf("%d tokens issued in %s of 20 s tokens; want at least 3 (refreshes)", len(tokens), time.Since(times[0]).Round(time.Second))
	}
	if out := k.output(); strings.Contains(out, "authentication failed") {
		t.Errorf("authentication failed during refreshes:\n%s", out)
	}

	// The identity provider now issues tokens for another audience: at
	// its next re-authentication the broker refuses kmirror, which says
	// so in one line, counts it and is not ready; once tokens are right
	// again it replicates again, record for record.
	switched := time.Now()
	idp.setMode("audience")
	line, at := waitLine(t, k, 2*time.Minute, `msg="cluster refused authentication; retrying"`, "the broker refused the token (status invalid_token)")
	var firstBad time.Time
	_, times = idp.tokens()
	for _, tm := range times {
		if tm.After(switched) {
			firstBad = tm
			break
		}
	}
	t.Logf("wrong-audience token refused at run time, %s after the first was issued: %s", at.Sub(firstBad).Round(time.Millisecond), line)
	if at.Sub(firstBad) > 15*time.Second {
		t.Errorf("the refusal was reported %s after the first wrong token was issued; want within 15s", at.Sub(firstBad))
	}
	checkAuthLine(t, "wrong-audience token at run time", line)
	waitFor(t, 15*time.Second, "/readyz to report the authentication failure", func() (bool, string) {
		code, body, err := k.get("/readyz")
		return err == nil && code != http.StatusOK && strings.Contains(body, "authentication"), fmt.Sprintf("%d %s %v", code, body, err)
	})
	_, readyz, _ := k.get("/readyz")
	_, metrics, _ := k.get("/metrics")
	if v, ok := metricValue(metrics, `kmirror_errors_total{flow="oauth",kind="authentication"}`); !ok || v < 1 {
		t.Errorf("kmirror_errors_total{kind=\"authentication\"} = %v (found %v), want at least 1", v, ok)
	}
	idp.setMode("ok")
	l.produce(t, cl, topic, 300)
	want = int64(l.total())
	took = waitFor(t, 2*time.Minute, "replication again with good tokens", func() (bool, string) {
		n := sum(endOffsets(t, cl, target))
		return n >= want, fmt.Sprintf("%d records", n)
	})
	if n, ok := checkMirrored(t, cl, l, topic, target); !ok {
		t.Fatal("the target differs from the source after the recovery")
	} else {
		t.Logf("replicating again %s after tokens were right; %d records record for record", took.Round(time.Millisecond), n)
	}
	k.stop()
	outputs := []string{k.output(), readyz, metrics}

	// At start: an expired and a wrong-audience token each stop kmirror
	// with one clear line.
	for _, tt := range []struct{ mode, want string }{
		{"expired", "the token expired at"},
		{"audience", "the broker refused the token (status invalid_token)"},
	} {
		idp.setMode(tt.mode)
		httpAddr := freeAddr(t)
		start := time.Now()
		k := startKmirror(t, writeConfig(t, cfg(httpAddr)), httpAddr)
		line, at := waitLine(t, k, 15*time.Second, tt.want)
		t.Logf("%s token at start: after %s: %s", tt.mode, at.Sub(start).Round(time.Millisecond), line)
		checkAuthLine(t, tt.mode+" token at start", line)
		k.stop()
		outputs = append(outputs, k.output())
	}

	// No secret in any output: the client secret and every token issued.
	tokens, _ = idp.tokens()
	for _, out := range outputs {
		for _, s := range append(tokens, secret) {
			if strings.Contains(out, s) {
				t.Errorf("a secret (%.12s...) shows in the output:\n%s", s, out)
			}
		}
	}
}

// startOAuthBroker starts the test's identity provider and a broker with
// an OAUTHBEARER SASL_SSL listener ("OAUTH") that validates tokens
// against the provider's JWKS, expecting audience "kafka" and the
// provider as issuer. It returns the CA file that verifies the broker.
func startOAuthBroker(t *testing.T, secret string) (*testIDP, *kafkatest.Cluster, string) {
	t.Helper()
	kafkatest.RequireLibs(t)
	idp := newTestIDP(t, secret)

	dir := t.TempDir()
	ca, err := certs.NewCA("kmirror test CA")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("broker", certs.Options{Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	broker, err := leaf.Write(dir, "broker")
	if err != nil {
		t.Fatal(err)
	}

	jwks := idp.srv.URL + "/jwks"
	c := kafkatest.Start(t, kafkatest.Options{
		Name: "oauth",
		Listeners: []kafkatest.Listener{{Name: "OAUTH", Protocol: "SASL_SSL", Props: kafkaproc.With(kafkatest.TLSProps(broker.Keystore, ""), map[string]string{
			"sasl.enabled.mechanisms":                        "OAUTHBEARER",
			"oauthbearer.sasl.jaas.config":                   "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;",
			"oauthbearer.sasl.server.callback.handler.class": "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler",
			// Sessions end when their token expires: each connection
			// must authenticate again with a fresh token.
			"oauthbearer.connections.max.reauth.ms": "3600000",
		})}},
		ExtraProps: map[string]string{
			"sasl.oauthbearer.jwks.endpoint.url": jwks,
			"sasl.oauthbearer.expected.audience": "kafka",
			"sasl.oauthbearer.expected.issuer":   idp.srv.URL,
		},
		JVMArgs: []string{"-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls=" + jwks},
	})

	return idp, c, caFile
}

// offsets describes times as seconds after the first.
func offsets(times []time.Time) string {
	var parts []string
	for _, t := range times {
		parts = append(parts, fmt.Sprintf("+%.1fs", t.Sub(times[0]).Seconds()))
	}
	return strings.Join(parts, " ")
}

// checkMirrored checks, record for record, that every partition of target
// holds the values the ledger wrote to topic, once each and in order. It
// returns the number of records checked and whether all were as expected.
func checkMirrored(t *testing.T, cl *kgo.Client, l *ledger, topic, target string) (int, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	got, err := verify.ReadAll(ctx, cl, target)
	if err != nil {
		t.Fatalf("reading %s: %v", target, err)
	}
	want := l.want(topic)
	n, ok := 0, true
	for p := int32(0); p < l.partitions; p++ {
		n += len(got[p])
		if len(got[p]) != len(want[p]) {
			t.Errorf("%s/%d: %d records, want %d", target, p, len(got[p]), len(want[p]))
			ok = false
			continue
		}
		for i, r := range got[p] {
			if string(r.Value) != want[p][i] {
				t.Errorf("%s/%d: offset %d holds %q, want %q", target, p, i, r.Value, want[p][i])
				ok = false
				break
			}
		}
	}
	return n, ok
}

// waitLine waits for a line of k's output containing every string of want
// and returns it with the time it was seen.
func waitLine(t *testing.T, k *proc, timeout time.Duration, want ...string) (string, time.Time) {
	t.Helper()
	var line string
	waitFor(t, timeout, fmt.Sprintf("a line with %q", want), func() (bool, string) {
	lines:
		for _, l := range strings.Split(k.output(), "\n") {
			for _, w := range want {
				if !strings.Contains(l, w) {
					continue lines
				}
			}
			line = l
			return true, ""
		}
		return false, k.output()
	})
	return line, time.Now()
}

// checkAuthLine checks that line names the cluster and the mechanism and
// does not call the cluster unreachable.
func checkAuthLine(t *testing.T, what, line string) {
	t.Helper()
	for _, w := range []string{"src", "OAUTHBEARER"} {
		if !strings.Contains(line, w) {
			t.Errorf("%s: the line lacks %s: %s", what, w, line)
		}
	}
	if strings.Contains(line, "unreachable") {
		t.Errorf("%s: reported as unreachable: %s", what, line)
	}
}
