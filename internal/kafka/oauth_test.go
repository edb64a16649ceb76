package kafka

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/sasl/oauth"

	"github.com/kmirror/kmirror/internal/config"
)

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// jwt returns an unsigned JWT-shaped token with claims.
func jwt(t *testing.T, claims map[string]any) string {
	t.Helper()
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none"}`)) + "." + enc(b) + ".sig"
}

// idp is a token endpoint that checks the client-credentials request and
// answers with what answer returns.
type idp struct {
	t      *testing.T
	mu     sync.Mutex
	calls  int
	answer func(n int) (status int, body string)
}

func (p *idp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.calls++
	n := p.calls
	p.mu.Unlock()
	if err := r.ParseForm(); err != nil {
		p.t.Errorf("form: %v", err)
	}
	if r.Method != http.MethodPost || r.PostForm.Get("grant_type") != "client_credentials" ||
		r.PostForm.Get("client_id") != "kmirror" || r.PostForm.Get("client_secret") != "hunter2" ||
		r.PostForm.Get("scope") != "kafka" {
		p.t.Errorf("request %s %v", r.Method, r.PostForm)
	}
	status, body := p.answer(n)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprint(w, body)
}

func (p *idp) count() int { p.mu.Lock(); defer p.mu.Unlock(); return p.calls }

func newIDP(t *testing.T, answer func(n int) (int, string)) (*idp, *config.OAuth) {
	p := &idp{t: t, answer: answer}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, &config.OAuth{TokenEndpoint: srv.URL + "/token", ClientID: "kmirror", ClientSecret: "hunter2", Scope: "kafka"}
}

func TestClientCredentialsRefresh(t *testing.T) {
	ctx := context.Background()
	down := false
	p, o := newIDP(t, func(n int) (int, string) {
		if down {
			return http.StatusServiceUnavailable, `{"error":"temporarily_unavailable","error_description":"maintenance","echo":"hunter2"}`
		}
		return http.StatusOK, fmt.Sprintf(`{"access_token":"tok-%d","token_type":"Bearer","expires_in":100}`, n)
	})
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	cc := newClientCredentials(o, http.DefaultClient, clock.now)

	for _, step := range []struct {
		advance time.Duration
		down    bool
		want    string // token, or "error: <part of the message>"
		calls   int    // calls to the endpoint so far
	}{
		{0, false, "tok-1", 1},
		{79 * time.Second, false, "tok-1", 1}, // before 80% of expires_in: cached
		{2 * time.Second, false, "tok-2", 2},  // 81 s: refreshed
		{81 * time.Second, true, "tok-2", 3},  // refresh fails, tok-2 still valid
		{20 * time.Second, true, "error: 503 Service Unavailable: temporarily_unavailable (maintenance)", 4},
		{time.Second, false, "tok-5", 5},
		{time.Second, false, "tok-6", 6}, // tok-5 was refused by a broker
	} {
		if step.want == "tok-6" {
			cc.refused("tok-4") // an older token: no effect
			if tok, _ := cc.token(ctx); tok != "tok-5" {
				t.Errorf("after refusing an older token: %s, want tok-5", tok)
			}
			cc.refused("tok-5")
		}
		clock.add(step.advance)
		down = step.down
		tok, err := cc.token(ctx)
		got := tok
		if err != nil {
			got = "error: " + err.Error()
			if strings.Contains(got, "hunter2") {
				t.Errorf("error shows the client secret: %v", err)
			}
		}
		if !strings.Contains(got, strings.TrimPrefix(step.want, "error: ")) || (err == nil) != !strings.HasPrefix(step.want, "error: ") {
			t.Errorf("after %v: got %q, want %q", clock.now().Sub(time.Unix(1_700_000_000, 0)), got, step.want)
		}
		if p.count() != step.calls {
			t.Errorf("after %v: %d calls to the endpoint, want %d", clock.now().Sub(time.Unix(1_700_000_000, 0)), p.count(), step.calls)
		}
	}
}

func TestClientCredentialsAnswers(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	for _, tt := range []struct {
		name    string
		status  int
		body    string
		want    string // token returned, or the error contains it
		wantErr bool
		cached  bool // a second call within the lifetime does not call the endpoint
	}{
		{name: "expires_in string", status: 200, body: `{"access_token":"a","expires_in":"60"}`, want: "a", cached: true},
		{name: "lifetime from exp claim", status: 200, body: `{"access_token":"` + jwt(t, map[string]any{"exp": now.Unix() + 60}) + `"}`, cached: true},
		{name: "no lifetime: used once", status: 200, body: `{"access_token":"a"}`, want: "a"},
		{name: "expired token", status: 200, body: `{"access_token":"` + jwt(t, map[string]any{"exp": now.Unix() - 3600}) + `","expires_in":60}`,
			want: "the token expired at 2023-11-14T21:13:20Z (1h0m0s ago)", wantErr: true},
		{name: "refused", status: 401, body: `{"error":"invalid_client","error_description":"bad secret hunter2"}`,
			want: `refused client "kmirror": 401 Unauthorized: invalid_client (bad secret <redacted>)`, wantErr: true},
		{name: "not json", status: 200, body: `<html>hunter2</html>`, want: "answer without an access_token", wantErr: true},
		{name: "no token", status: 200, body: `{"token_type":"Bearer"}`, want: "answer without an access_token", wantErr: true},
		{name: "error not json", status: 500, body: `hunter2`, want: "refused client \"kmirror\": 500 Internal Server Error", wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, o := newIDP(t, func(int) (int, string) { return tt.status, tt.body })
			cc := newClientCredentials(o, http.DefaultClient, func() time.Time { return now })
			tok, err := cc.token(context.Background())
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("err = %v, want %q", err, tt.want)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Errorf("err %v shows the client secret", err)
				}
				if !strings.Contains(err.Error(), o.TokenEndpoint) {
					t.Errorf("err %v does not name the endpoint", err)
				}
				return
			}
			if err != nil || tok == "" || (tt.want != "" && tok != tt.want) {
				t.Fatalf("token = %q, %v; want %q", tok, err, tt.want)
			}
			if _, err := cc.token(context.Background()); err != nil {
				t.Fatal(err)
			}
			if calls, want := p.count(), map[bool]int{true: 1, false: 2}[tt.cached]; calls != want {
				t.Errorf("%d calls for two tokens, want %d", calls, want)
			}
		})
	}
}

func TestTokenFile(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	path := filepath.Join(t.TempDir(), "token")
	f := &tokenFile{path: path, now: func() time.Time { return now }}
	for _, tt := range []struct {
		name    string
		content string // "" with noFile: no file
		noFile  bool
		want    string
		wantErr string
	}{
		{name: "missing", noFile: true, wantErr: "token_file: open " + path + ": no such file or directory"},
		{name: "token", content: "tok-1\n", want: "tok-1"},
		{name: "rotated", content: "tok-2", want: "tok-2"},
		{name: "empty", content: " \n", wantErr: "token_file " + path + " is empty; expected a token"},
		{name: "valid jwt", content: jwt(t, map[string]any{"exp": now.Unix() + 10})},
		{name: "just expired", content: jwt(t, map[string]any{"exp": now.Unix()}),
			wantErr: "token_file " + path + ": the token expired at 2023-11-14T22:13:20Z (0s ago)"},
		{name: "expired jwt", content: jwt(t, map[string]any{"exp": now.Unix() - 120}),
			wantErr: "token_file " + path + ": the token expired at 2023-11-14T22:11:20Z (2m0s ago)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.noFile {
				if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			tok, err := f.token(context.Background())
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			want := tt.want
			if want == "" {
				want = tt.content
			}
			if err != nil || tok != want {
				t.Fatalf("token = %q, %v; want %q", tok, err, want)
			}
		})
	}
}

func TestBearerMechanism(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("tok-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := saslMechanism(&config.SASL{Mechanism: "OAUTHBEARER", OAuth: &config.OAuth{TokenFile: path,
		Extensions: map[string]string{"logicalCluster": "lkc-1", "identityPoolId": "pool-1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if m.Name() != "OAUTHBEARER" {
		t.Errorf("Name = %q", m.Name())
	}
	s, first, err := m.Authenticate(context.Background(), "b:9092")
	if err != nil {
		t.Fatal(err)
	}
	// RFC 7628 section 3.1: gs2 header, auth, extensions sorted.
	if want := "n,,\x01auth=Bearer tok-1\x01identityPoolId=pool-1\x01logicalCluster=lkc-1\x01\x01"; string(first) != want {
		t.Errorf("first message %q, want %q", first, want)
	}
	if done, out, err := s.Challenge(nil); !done || out != nil || err != nil {
		t.Errorf("accepted: Challenge = %v, %q, %v", done, out, err)
	}

	// Refused: the error names the claims brokers check.
	tok := jwt(t, map[string]any{"aud": "other", "iss": "https://idp", "sub": "kmirror", "exp": 1_700_000_000})
	if err := os.WriteFile(path, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	// The token expired long ago: read it the broker's way, past the
	// local expiry check.
	s, _, err = bearer{Mechanism: oauth.Auth{Token: tok}.AsMechanism()}.Authenticate(context.Background(), "b:9092")
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Challenge([]byte(`{"status":"invalid_token"}`))
	want := "OAUTHBEARER: the broker refused the token (status invalid_token); check that it matches the broker's expected audience, issuer and key: " +
		"token aud=other iss=https://idp sub=kmirror exp=2023-11-14T22:13:20Z"
	if err == nil || err.Error() != want {
		t.Errorf("refused: %v\nwant %s", err, want)
	}
	var ce credentialsError
	if !errors.As(err, &ce) {
		t.Errorf("refused: %T is not a credentialsError", err)
	}

	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Authenticate(context.Background(), "b:9092"); err == nil || err.Error() != "OAUTHBEARER: token_file "+path+" is empty; expected a token" {
		t.Errorf("empty token file: %v", err)
	}
}
