package kafka

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"

	"github.com/kmirror/kmirror/internal/config"
)

// refreshFraction is the part of a token's lifetime after which the next
// authentication fetches a new one, so that a token is never presented
// close to its expiry.
const refreshFraction = 0.8

// tokenSource returns the OAUTHBEARER token for the next authentication.
// refused tells it that a broker refused tok, so that it is not sent
// again.
type tokenSource interface {
	token(ctx context.Context) (string, error)
	refused(tok string)
}

// oauthMechanism returns the OAUTHBEARER mechanism for o: franz-go's,
// with tokens from the client-credentials flow or a token file.
func oauthMechanism(o *config.OAuth) (sasl.Mechanism, error) {
	if o == nil {
		return nil, errors.New("sasl: OAUTHBEARER needs token_endpoint or token_file")
	}
	var src tokenSource
	switch {
	case o.TokenFile != "":
		src = &tokenFile{path: o.TokenFile, now: time.Now}
	case o.TokenEndpoint != "":
		src = newClientCredentials(o, &http.Client{Timeout: 30 * time.Second}, time.Now)
	default:
		return nil, errors.New("sasl: OAUTHBEARER needs token_endpoint or token_file")
	}
	return bearer{Mechanism: oauth.Oauth(func(ctx context.Context) (oauth.Auth, error) {
		tok, err := src.token(ctx)
		if err != nil {
			return oauth.Auth{}, err
		}
		return oauth.Auth{Token: tok, Extensions: o.Extensions}, nil
	}), src: src}, nil
}

// credentialsError is a failure to get what a SASL mechanism
// authenticates with (a token, AWS credentials) before anything is sent to
// the broker: an authentication failure, not an unreachable cluster.
type credentialsError struct{ err error }

func (e credentialsError) Error() string { return e.err.Error() }
func (e credentialsError) Unwrap() error { return e.err }

// bearer is franz-go's OAUTHBEARER mechanism with a clear error when the
// broker refuses the token. A broker that refuses a token answers with a
// JSON status (RFC 7628 section 3.2.2) such as {"status":"invalid_token"},
// which says nothing of why; the error names the token's claims that
// brokers check (audience, issuer, subject, scope, expiry), which are not
// secret, so that a mismatch with the broker's expectations shows.
type bearer struct {
	sasl.Mechanism
	src tokenSource // nil: nothing to tell of a refusal
}

func (b bearer) Authenticate(ctx context.Context, host string) (sasl.Session, []byte, error) {
	_, first, err := b.Mechanism.Authenticate(ctx, host)
	if err != nil {
		return nil, nil, credentialsError{fmt.Errorf("OAUTHBEARER: %w", err)}
	}
	tok, _, _ := strings.Cut(string(first[bytes.Index(first, []byte("auth=Bearer "))+len("auth=Bearer "):]), "\x01")
	s := &bearerSession{claims: describeClaims(tok)}
	if b.src != nil {
		s.refused = func() { b.src.refused(tok) }
	}
	return s, first, nil
}

type bearerSession struct {
	claims  string
	refused func()
}

func (s *bearerSession) Challenge(resp []byte) (bool, []byte, error) {
	if len(resp) == 0 {
		return true, nil, nil
	}
	var st struct {
		Status string `json:"status"`
	}
	if json.Unmarshal(resp, &st) != nil || st.Status == "" {
		st.Status = "unknown"
	}
	if s.refused != nil {
		s.refused()
	}
	return false, nil, credentialsError{fmt.Errorf("OAUTHBEARER: the broker refused the token (status %s); "+
		"check that it matches the broker's expected audience, issuer and key: %s", printable(st.Status, 50), s.claims)}
}

// describeClaims describes the non-secret claims of a JWT: aud, iss, sub,
// scope, exp.
func describeClaims(tok string) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "the token is not a JWT"
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	var claims map[string]any
	if err != nil || json.Unmarshal(payload, &claims) != nil {
		return "the token's claims cannot be read"
	}
	var out []string
	for _, k := range [...]string{"aud", "iss", "sub", "scope"} {
		if v, ok := claims[k]; ok {
			out = append(out, fmt.Sprintf("%s=%v", k, v))
		}
	}
	if exp, ok := jwtExpiry(tok); ok {
		out = append(out, "exp="+exp.UTC().Format(time.RFC3339))
	}
	return printable("token "+strings.Join(out, " "), 400)
}

// clientCredentials gets tokens from an OAuth 2 token endpoint with the
// client-credentials grant (RFC 6749 section 4.4), and keeps each until
// refreshFraction of its lifetime has passed.
type clientCredentials struct {
	endpoint, clientID, clientSecret, scope string
	client                                  *http.Client
	now                                     func() time.Time

	mu        sync.Mutex
	tok       string
	refreshAt time.Time // fetch a new token from then on
	expiry    time.Time // tok is not sent from then on
}

func newClientCredentials(o *config.OAuth, client *http.Client, now func() time.Time) *clientCredentials {
	return &clientCredentials{
		endpoint:     o.TokenEndpoint,
		clientID:     o.ClientID,
		clientSecret: o.ClientSecret,
		scope:        o.Scope,
		client:       client,
		now:          now,
	}
}

// token returns the cached token, or fetches a new one once the cached one
// is due for refresh. A failed refresh falls back to the cached token
// while it is still valid, so an identity provider that is down for less
// than a fifth of a token's lifetime goes unnoticed.
func (c *clientCredentials) token(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if c.tok != "" && now.Before(c.refreshAt) {
		return c.tok, nil
	}
	tok, lifetime, err := c.fetch(ctx)
	if err != nil {
		if c.tok != "" && now.Before(c.expiry) {
			return c.tok, nil
		}
		return "", err
	}
	if err := checkExpiry(tok, now); err != nil {
		return "", fmt.Errorf("token endpoint %s: %w", c.endpoint, err)
	}
	c.tok = ""
	if lifetime > 0 {
		c.tok = tok
		c.refreshAt = now.Add(time.Duration(float64(lifetime) * refreshFraction))
		c.expiry = now.Add(lifetime)
	}
	return tok, nil
}

// refused drops tok from the cache: the next authentication fetches a new
// token, so that a fix at the identity provider takes effect at once.
func (c *clientCredentials) refused(tok string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tok == tok {
		c.tok = ""
	}
}

// fetch asks the endpoint for a token and returns it with its lifetime:
// expires_in, else the time left to the JWT's exp claim, else 0 (then the
// token is used once).
func (c *clientCredentials) fetch(ctx context.Context) (string, time.Duration, error) {
	form := url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {c.clientID},
		"client_secret": {c.clientSecret},
	}
	if c.scope != "" {
		form.Set("scope", c.scope)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return "", 0, fmt.Errorf("token endpoint %s: %w", c.endpoint, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return "", 0, fmt.Errorf("token endpoint %s: %w", c.endpoint, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", 0, fmt.Errorf("token endpoint %s: reading the answer: %w", c.endpoint, err)
	}
	var tr struct {
		AccessToken string          `json:"access_token"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
		Error       string          `json:"error"`
		Description string          `json:"error_description"`
	}
	jsonErr := json.Unmarshal(body, &tr)
	if resp.StatusCode != http.StatusOK {
		// RFC 6749 section 5.2: error and error_description say why;
		// nothing else of the answer is shown, as it could echo the
		// request.
		why := resp.Status
		if jsonErr == nil && tr.Error != "" {
			why += ": " + printable(tr.Error, 100)
			if tr.Description != "" {
				why += " (" + printable(tr.Description, 200) + ")"
			}
		}
		// A provider that echoes the secret must not get it printed.
		why = strings.ReplaceAll(why, c.clientSecret, "<redacted>")
		return "", 0, fmt.Errorf("token endpoint %s refused client %q: %s", c.endpoint, c.clientID, why)
	}
	if jsonErr != nil || tr.AccessToken == "" {
		return "", 0, fmt.Errorf("token endpoint %s: answer without an access_token; expected a JSON token response", c.endpoint)
	}
	lifetime, ok := expiresIn(tr.ExpiresIn)
	if !ok {
		if exp, ok := jwtExpiry(tr.AccessToken); ok {
			lifetime = exp.Sub(c.now())
		}
	}
	return tr.AccessToken, lifetime, nil
}

// expiresIn decodes expires_in, a number of seconds (some providers send
// it as a string).
func expiresIn(raw json.RawMessage) (time.Duration, bool) {
	raw = bytes.Trim(raw, `"`)
	if len(raw) == 0 {
		return 0, false
	}
	secs, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || secs <= 0 || secs > 10*365*24*3600 {
		return 0, false
	}
	return time.Duration(secs * float64(time.Second)), true
}

// tokenFile reads the token from a file at every authentication, so a
// token that another process rotates is used by the next connection.
type tokenFile struct {
	path string
	now  func() time.Time
}

// refused does nothing: the file is read again at every authentication.
func (f *tokenFile) refused(string) {}

func (f *tokenFile) token(context.Context) (string, error) {
	b, err := os.ReadFile(f.path)
	if err != nil {
		return "", fmt.Errorf("token_file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token_file %s is empty; expected a token", f.path)
	}
	if err := checkExpiry(tok, f.now()); err != nil {
		return "", fmt.Errorf("token_file %s: %w", f.path, err)
	}
	return tok, nil
}

// checkExpiry refuses a JWT whose exp claim has passed: a broker would
// refuse it, or accept it for a session that ends at once, and the
// connection would fail with no reason given. Tokens that are not JWTs
// pass.
func checkExpiry(tok string, now time.Time) error {
	exp, ok := jwtExpiry(tok)
	if ok && !now.Before(exp) {
		return fmt.Errorf("the token expired at %s (%s ago)", exp.UTC().Format(time.RFC3339), now.Sub(exp).Round(time.Second))
	}
	return nil
}

// jwtExpiry returns the exp claim of a JWT, read without checking the
// signature (the broker checks it).
func jwtExpiry(tok string) (time.Time, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *float64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == nil {
		return time.Time{}, false
	}
	sec := int64(*claims.Exp)
	return time.Unix(sec, 0), true
}

// printable cuts s to at most n bytes of printable text for an error.
func printable(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}
