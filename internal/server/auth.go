package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/kmirror/kmirror/internal/config"
)

// public reports whether path answers without credentials, so that
// liveness and readiness probes need none.
func public(path string) bool { return path == "/healthz" || path == "/readyz" }

// credentials checks a request's Authorization header. It keeps only
// digests of the configured secrets, and compares digests in constant
// time, so neither the secret nor its length leaks through timing.
type credentials struct {
	scheme    string // "Bearer" or "Basic"; "" when none are required
	challenge string // WWW-Authenticate value of a 401
	token     [sha256.Size]byte
	user      [sha256.Size]byte
	password  [sha256.Size]byte
}

func newCredentials(h config.HTTP) *credentials {
	switch {
	case h.AuthToken != "":
		return &credentials{scheme: "Bearer", challenge: `Bearer realm="kmirror"`, token: sha256.Sum256([]byte(h.AuthToken))}
	case h.BasicAuth != nil:
		return &credentials{scheme: "Basic", challenge: `Basic realm="kmirror", charset="UTF-8"`,
			user: sha256.Sum256([]byte(h.BasicAuth.Username)), password: sha256.Sum256([]byte(h.BasicAuth.Password))}
	}
	return &credentials{}
}

// required reports whether requests must carry credentials.
func (c *credentials) required() bool { return c.scheme != "" }

// ok reports whether r carries the configured credentials.
func (c *credentials) ok(r *http.Request) bool {
	switch c.scheme {
	case "":
		return true
	case "Bearer":
		scheme, tok, found := strings.Cut(r.Header.Get("Authorization"), " ")
		if !found || !strings.EqualFold(scheme, "Bearer") {
			return false
		}
		return equal(c.token, strings.TrimSpace(tok)) == 1
	default:
		user, pass, found := r.BasicAuth()
		// Both compared, so that the time does not tell which was wrong.
		return found && equal(c.user, user)&equal(c.password, pass) == 1
	}
}

// equal compares want with the digest of got in constant time; it returns
// 1 if they match, else 0 (an int, so that results combine without
// short-circuiting).
func equal(want [sha256.Size]byte, got string) int {
	d := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(want[:], d[:])
}

// refusals logs refused requests at most once a minute, with how many there
// were, so that a client without credentials cannot flood the log.
type refusals struct {
	mu      sync.Mutex
	last    time.Time
	pending int
}

// add counts a refusal and returns how many to log now (0: not yet).
func (r *refusals) add(now time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending++
	if !r.last.IsZero() && now.Sub(r.last) < time.Minute {
		return 0
	}
	n := r.pending
	r.last, r.pending = now, 0
	return n
}
