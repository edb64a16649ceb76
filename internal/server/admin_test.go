package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/metrics"
)

const testToken = "test-admin-token-9f8e7d6c5b4a"

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs a server configured by h on a loopback port until the test
// ends and returns its address and log.
func start(t *testing.T, h config.HTTP) (string, *syncBuffer) {
	t.Helper()
	h.Listen = "127.0.0.1:0"
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(nil, metrics.New(), "test", h, logger)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), logs
}

// get sends one request with an optional Authorization header.
func get(t *testing.T, c *http.Client, url, auth string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

func basic(user, pass string) string {
	r, _ := http.NewRequest(http.MethodGet, "/", nil)
	r.SetBasicAuth(user, pass)
	return r.Header.Get("Authorization")
}

func TestAuth(t *testing.T) {
	for _, tc := range []struct {
		name      string
		http      config.HTTP
		challenge string
		good      string
		bad       []string
	}{
		{
			name: "bearer token", http: config.HTTP{AuthToken: testToken}, challenge: `Bearer realm="kmirror"`,
			good: "Bearer " + testToken,
			bad:  []string{"", "Bearer", "Bearer wrong-token-0000000000", "Bearer " + testToken + "x", "Basic " + testToken, basic("x", testToken)},
		},
		{
			name: "basic auth", http: config.HTTP{BasicAuth: &config.BasicAuth{Username: "ops", Password: testToken}},
			challenge: `Basic realm="kmirror", charset="UTF-8"`,
			good:      basic("ops", testToken),
			bad:       []string{"", basic("ops", "wrong"), basic("root", testToken), "Bearer " + testToken},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, logs := start(t, tc.http)
			c := &http.Client{Timeout: 10 * time.Second}
			base := "http://" + addr
			refused := 0
			for _, path := range []string{"/metrics", "/api/flows", "/", "/nothing"} {
				for _, auth := range tc.bad {
					code, hdr, body := get(t, c, base+path, auth)
					refused++
					if code != http.StatusUnauthorized || hdr.Get("WWW-Authenticate") != tc.challenge {
						t.Errorf("GET %s with %q: %d, WWW-Authenticate %q; want 401, %q", path, auth, code, hdr.Get("WWW-Authenticate"), tc.challenge)
					}
					if strings.Contains(body, testToken) {
						t.Errorf("401 body shows the secret: %s", body)
					}
				}
			}
			for path, want := range map[string]int{"/metrics": 200, "/api/flows": 200, "/": 200, "/nothing": 404} {
				if code, _, _ := get(t, c, base+path, tc.good); code != want {
					t.Errorf("GET %s with the credentials: %d, want %d", path, code, want)
				}
			}
			for _, path := range []string{"/healthz", "/readyz"} {
				if code, _, _ := get(t, c, base+path, ""); code != http.StatusOK {
					t.Errorf("GET %s without credentials: %d, want 200", path, code)
				}
			}
			_, _, m := get(t, c, base+"/metrics", tc.good)
			if want := fmt.Sprintf("kmirror_http_unauthorized_requests_total %d", refused); !strings.Contains(m, want) {
				t.Errorf("/metrics lacks %q", want)
			}
			if strings.Contains(m, testToken) || strings.Contains(logs.String(), testToken) {
				t.Errorf("secret in /metrics or the log:\n%s", logs.String())
			}
			if n := strings.Count(logs.String(), "refused requests without valid credentials"); n != 1 {
				t.Errorf("%d log lines about refused requests, want 1 (throttled):\n%s", n, logs.String())
			}
		})
	}
}

func TestNoAuthConfigured(t *testing.T) {
	addr, _ := start(t, config.HTTP{})
	c := &http.Client{Timeout: 10 * time.Second}
	if code, _, _ := get(t, c, "http://"+addr+"/api/flows", ""); code != http.StatusOK {
		t.Fatalf("GET /api/flows: %d, want 200", code)
	}
}

func TestHeaderLimit(t *testing.T) {
	addr, _ := start(t, config.HTTP{MaxHeaderBytes: 1024})
	c := &http.Client{Timeout: 10 * time.Second}
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/healthz", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 64<<10))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("64 KiB header: %d, want 431", resp.StatusCode)
	}
}

// closedWithin reads from each connection until the server closes it and
// returns how long each took; a connection still open after limit fails
// the test.
func closedWithin(t *testing.T, conns []net.Conn, since time.Time, limit time.Duration) []time.Duration {
	t.Helper()
	out := make([]time.Duration, len(conns))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open int
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(since.Add(limit))
			_, err := io.Copy(io.Discard, c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				mu.Lock()
				open++
				mu.Unlock()
			}
			out[i] = time.Since(since)
			c.Close()
		}()
	}
	wg.Wait()
	if open > 0 {
		t.Fatalf("%d of %d connections still open after %s", open, len(conns), limit)
	}
	return out
}

func TestIdleConnectionsClosed(t *testing.T) {
	const n = 100
	addr, _ := start(t, config.HTTP{IdleTimeout: time.Second, ReadHeaderTimeout: time.Second, MaxConnections: 2 * n})
	start := time.Now()
	var conns []net.Conn
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if i%2 == 0 { // one request, then idle on keep-alive
			fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		}
		conns = append(conns, c)
	}
	took := closedWithin(t, conns, start, 30*time.Second)
	for i, d := range took {
		if d < 900*time.Millisecond {
			t.Errorf("connection %d closed after %s, before the 1s timeout", i, d)
		}
	}
}

func TestConnectionCap(t *testing.T) {
	const limit = 4
	addr, _ := start(t, config.HTTP{MaxConnections: limit, ReadHeaderTimeout: time.Minute})
	var held []net.Conn
	for range limit {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	served := make(chan int, 1)
	go func() {
		c := &http.Client{Timeout: time.Minute}
		resp, err := c.Get("http://" + addr + "/healthz")
		if err != nil {
			served <- 0
			return
		}
		resp.Body.Close()
		served <- resp.StatusCode
	}()
	select {
	case code := <-served:
		t.Fatalf("a request beyond the cap of %d was answered (%d) while the cap was reached", limit, code)
	case <-time.After(time.Second):
	}
	for _, c := range held {
		c.Close()
	}
	select {
	case code := <-served:
		if code != http.StatusOK {
			t.Fatalf("waiting request: %d, want 200", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the waiting request was not served after the held connections closed")
	}
}

// writeCert writes a self-signed certificate for 127.0.0.1 named cn.
func writeCert(t *testing.T, certFile, keyFile, cn string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// Written to temporary files and renamed, as a rotation would.
	for path, block := range map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "EC PRIVATE KEY", Bytes: kder}} {
		if err := os.WriteFile(path+".tmp", pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
}

// peerCN connects over TLS and returns the server certificate's name.
func peerCN(t *testing.T, addr string) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the test checks which certificate is served
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

func TestTLSCertificateReloaded(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "admin.pem"), filepath.Join(dir, "admin-key.pem")
	writeCert(t, certFile, keyFile, "first")
	addr, _ := start(t, config.HTTP{TLS: &config.HTTPTLS{CertFile: certFile, KeyFile: keyFile}, AuthToken: testToken})
	if cn := peerCN(t, addr); cn != "first" {
		t.Fatalf("certificate %q, want first", cn)
	}
	writeCert(t, certFile, keyFile, "second")
	deadline := time.Now().Add(30 * time.Second)
	for peerCN(t, addr) != "second" {
		if time.Now().After(deadline) {
			t.Fatal("the rotated certificate was not served within 30s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A half-written pair is not taken; the server keeps serving.
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(certCheckInterval + 100*time.Millisecond)
	if cn := peerCN(t, addr); cn != "second" {
		t.Fatalf("after a bad key file: certificate %q, want second", cn)
	}
	pool := x509.NewCertPool()
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(pemBytes)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if code, _, _ := get(t, c, "https://"+addr+"/api/flows", "Bearer "+testToken); code != http.StatusOK {
		t.Fatalf("GET /api/flows over TLS: %d", code)
	}
}

func TestBadCertificateStopsStart(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	for _, f := range []string{certFile, keyFile} {
		if err := os.WriteFile(f, []byte("junk"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, err := New(nil, metrics.New(), "test", config.HTTP{TLS: &config.HTTPTLS{CertFile: certFile, KeyFile: keyFile}}, slog.New(slog.DiscardHandler))
	if err == nil || !strings.HasPrefix(err.Error(), "http.tls: ") {
		t.Fatalf("New with a junk certificate: %v, want an http.tls error", err)
	}
}

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9780": true, "[::1]:9780": true, "localhost:9780": true,
		":9780": false, "0.0.0.0:9780": false, "[::]:9780": false, "10.0.0.1:9780": false, "admin.example:9780": false,
	} {
		if got := loopback(addr); got != want {
			t.Errorf("loopback(%q) = %t, want %t", addr, got, want)
		}
	}
}

func TestListenWarnsWhenExposed(t *testing.T) {
	for _, tc := range []struct {
		name string
		http config.HTTP
		want string // "" for no warning
	}{
		{"loopback", config.HTTP{Listen: "127.0.0.1:0"}, ""},
		{"all interfaces, no credentials", config.HTTP{Listen: "0.0.0.0:0"}, "reachable from other hosts without credentials"},
		{"all interfaces, token over plain HTTP", config.HTTP{Listen: "0.0.0.0:0", AuthToken: testToken}, "credentials cross the network in clear"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &syncBuffer{}
			s, err := New(nil, metrics.New(), "test", tc.http, slog.New(slog.NewTextHandler(logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			ln, err := s.Listen()
			if err != nil {
				t.Fatal(err)
			}
			ln.Close()
			switch got := logs.String(); {
			case tc.want == "" && got != "":
				t.Errorf("unexpected log: %s", got)
			case !strings.Contains(got, tc.want) || strings.Count(got, "\n") > 1:
				t.Errorf("log %q, want one line with %q", got, tc.want)
			}
			if strings.Contains(logs.String(), testToken) {
				t.Error("the token is logged")
			}
		})
	}
}
