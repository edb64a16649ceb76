package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// adminToken is the admin token of the tests below; nothing kmirror shows
// may contain it.
const adminToken = "e2e-admin-token-5b0c1d7e9a2f4c68"

// adminGet fetches path from the admin server at addr with an optional
// Authorization header.
func adminGet(addr, path, auth string) (int, http.Header, string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, nil, "", err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	// A connection per request: none is left open to count against
	// max_connections or to be reused past it.
	c := http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b), err
}

// openFDs counts the file descriptors process pid holds.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("counting the file descriptors of kmirror: %v", err)
	}
	return len(ents)
}

// adminConns counts the TCP connections process pid has accepted on the
// port of addr (its sockets on that port, the listening one left out).
func adminConns(t *testing.T, pid int, addr string) int {
	t.Helper()
	_, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, f := range []string{"tcp", "tcp6"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fs := strings.Fields(line)
			if len(fs) < 10 || fs[3] == "0A" { // 0A: listening
				continue
			}
			_, lport, _ := strings.Cut(fs[1], ":")
			if p, err := strconv.ParseInt(lport, 16, 32); err == nil && int(p) == port {
				inodes[fs[9]] = true
			}
		}
	}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		link, err := os.Readlink(dir + "/" + e.Name())
		if err == nil && strings.HasPrefix(link, "socket:[") && inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] {
			n++
		}
	}
	return n
}

// raiseFDLimit lifts this process's open-file limit (inherited by kmirror)
// to at least n.
func raiseFDLimit(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		t.Fatalf("open-file limit: hard limit %d is below the %d this test needs", lim.Max, n)
	}
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("raising the open-file limit to %d: %v", n, err)
	}
}

// TestAdminHTTPAuthAndIdleConnections runs kmirror with an admin token and
// short timeouts: requests without the token, or with a wrong one, get 401
// (except the probes), requests with it are served, the token shows up
// nowhere, and 1,000 idle connections are closed by the server's timeouts.
func TestAdminHTTPAuthAndIdleConnections(t *testing.T) {
	const conns = 1000
	raiseFDLimit(t, 4096)
	p := startPair(t)
	createTopic(t, p.srcCl, "admin", 1, nil)
	recs := make([]*kgo.Record, 100)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: "admin", Value: fmt.Appendf(nil, "r%d", i)}
	}
	produce(t, p.srcCl, recs)

	setEnv(t, "KMIRROR_ADMIN_TOKEN", adminToken)
	addr := freeAddr(t)
	cfg := p.flowConfig(addr, `topics: ["admin"]`) + `  auth_token: ${KMIRROR_ADMIN_TOKEN}
  read_header_timeout: 3s
  idle_timeout: 3s
  max_connections: 2000
`
	k := startKmirror(t, writeConfig(t, cfg), addr)
	waitFor(t, 2*time.Minute, "/readyz 200 without a token", func() (bool, string) {
		code, _, body, err := adminGet(addr, "/readyz", "")
		return err == nil && code == http.StatusOK, fmt.Sprintf("%d %q %v", code, body, err)
	})
	waitFor(t, 2*time.Minute, "100 records replicated", func() (bool, string) {
		n := sum(endOffsets(t, p.dstCl, "src.admin"))
		return n == 100, fmt.Sprintf("%d on the target", n)
	})

	t.Run("token", func(t *testing.T) {
		for _, path := range []string{"/api/flows", "/metrics", "/"} {
			for _, auth := range []string{"", "Bearer wrong-token-0000000000000", "Bearer " + adminToken[:len(adminToken)-1], "Basic " + adminToken} {
				code, hdr, body, err := adminGet(addr, path, auth)
				if err != nil {
					t.Fatal(err)
				}
				if code != http.StatusUnauthorized || hdr.Get("WWW-Authenticate") != `Bearer realm="kmirror"` {
					t.Errorf("GET %s with Authorization %q: %d, WWW-Authenticate %q; want 401 with a Bearer challenge", path, auth, code, hdr.Get("WWW-Authenticate"))
				}
				if strings.Contains(body, adminToken) {
					t.Errorf("401 body shows the token: %s", body)
				}
			}
			code, _, body, err := adminGet(addr, path, "Bearer "+adminToken)
			if err != nil || code != http.StatusOK {
				t.Errorf("GET %s with the token: %d %v, want 200", path, code, err)
			}
			if strings.Contains(body, adminToken) {
				t.Errorf("GET %s shows the token", path)
			}
			if path == "/api/flows" && !strings.Contains(body, `"admin"`) {
				t.Errorf("/api/flows does not list topic admin:\n%s", body)
			}
			if path == "/metrics" && !strings.Contains(body, "kmirror_http_unauthorized_requests_total") {
				t.Errorf("/metrics lacks kmirror_http_unauthorized_requests_total")
			}
		}
		if code, _, _, err := adminGet(addr, "/healthz", ""); err != nil || code != http.StatusOK {
			t.Errorf("GET /healthz without a token: %d %v, want 200", code, err)
		}
		if strings.Contains(k.output(), adminToken) {
			t.Errorf("kmirror's log shows the token")
		}
		if !strings.Contains(k.output(), "refused requests without valid credentials") {
			t.Errorf("no log line about refused requests:\n%s", k.output())
		}
	})

	t.Run("idle connections", func(t *testing.T) {
		pid := k.cmd.Process.Pid
		before := openFDs(t, pid)
		start := time.Now()
		open := make([]net.Conn, 0, conns)
		for i := range conns {
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			defer c.Close()
			if i%2 == 0 { // one request, then idle on keep-alive
				if _, err := fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: kmirror\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
			}
			open = append(open, c)
		}
		dialed := time.Since(start)
		// Counted before the 3s timeouts close them.
		var accepted int
		for time.Since(start) < 2*time.Second && accepted < conns {
			accepted = max(accepted, adminConns(t, pid, addr))
		}
		if accepted != conns {
			t.Errorf("kmirror accepted %d of the %d connections within 2s", accepted, conns)
		}
		peak := openFDs(t, pid)
		if peak < before+conns/2 {
			t.Errorf("kmirror holds %d file descriptors with %d connections open, %d before: the connections were not accepted", peak, conns, before)
		}
		// Each connection is read until the server closes it.
		took := make([]time.Duration, conns)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var stillOpen, closed int
		for i, c := range open {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = c.SetReadDeadline(start.Add(2 * time.Minute))
				_, err := io.Copy(io.Discard, c)
				took[i] = time.Since(start)
				var ne net.Error
				mu.Lock()
				defer mu.Unlock()
				if errors.As(err, &ne) && ne.Timeout() {
					stillOpen++
				} else {
					closed++
				}
			}()
		}
		wg.Wait()
		after := openFDs(t, pid)
		var req, silent []time.Duration
		for i, d := range took {
			if i%2 == 0 {
				req = append(req, d)
			} else {
				silent = append(silent, d)
			}
		}
		t.Logf("%d connections dialed in %s, %d accepted by kmirror; its file descriptors: %d before, %d with the connections open, %d after (%d admin connections left)",
			conns, dialed.Round(time.Millisecond), accepted, before, peak, after, adminConns(t, pid, addr))
		t.Logf("closed by kmirror: %d of %d (%d still open after 2m)", closed, conns, stillOpen)
		t.Logf("%d after one request (idle_timeout 3s): closed %s after the first dial", len(req), span(req))
		t.Logf("%d without a request (read_header_timeout 3s): closed %s after the first dial", len(silent), span(silent))
		if stillOpen > 0 {
			t.Fatalf("%d of %d idle connections still open after 2m", stillOpen, conns)
		}
		if lo, _ := minMax(took); lo < 2500*time.Millisecond {
			t.Errorf("a connection was closed after %s, before the 3s timeouts: not closed for being idle", lo)
		}
		if after > before+20 {
			t.Errorf("kmirror holds %d file descriptors after the connections were closed, %d before", after, before)
		}
		if code, _, _, err := adminGet(addr, "/healthz", ""); err != nil || code != http.StatusOK {
			t.Errorf("GET /healthz after: %d %v", code, err)
		}
	})
}

func minMax(ds []time.Duration) (time.Duration, time.Duration) {
	return slices.Min(ds), slices.Max(ds)
}

// span is "min .. max" of ds.
func span(ds []time.Duration) string {
	lo, hi := minMax(ds)
	return lo.Round(10*time.Millisecond).String() + " .. " + hi.Round(10*time.Millisecond).String()
}

// TestAdminHTTPConnectionCap runs kmirror with max_connections 8: with 8
// connections held open, further ones wait unread (kmirror's file
// descriptors do not grow), and once they close /healthz is served again.
func TestAdminHTTPConnectionCap(t *testing.T) {
	const capConns, extra = 8, 100
	p := startPair(t)
	addr := freeAddr(t)
	cfg := p.flowConfig(addr, `topics: ["capped"]`) + `  read_header_timeout: 60s
  max_connections: 8
`
	k := startKmirror(t, writeConfig(t, cfg), addr)
	waitFor(t, 2*time.Minute, "/healthz 200", func() (bool, string) {
		code, _, body, err := adminGet(addr, "/healthz", "")
		return err == nil && code == http.StatusOK, fmt.Sprintf("%d %q %v", code, body, err)
	})
	pid := k.cmd.Process.Pid

	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	var held []net.Conn
	for range capConns {
		held = append(held, dial())
	}
	served := make(chan string, 1)
	go func() {
		c := http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get("http://" + addr + "/healthz")
		if err != nil {
			served <- err.Error()
			return
		}
		resp.Body.Close()
		served <- resp.Status
	}()
	time.Sleep(500 * time.Millisecond) // the probe's connection queues before the extras
	var extras []net.Conn
	for range extra {
		extras = append(extras, dial())
	}
	waitFor(t, time.Minute, "kmirror to accept the held connections", func() (bool, string) {
		n := adminConns(t, pid, addr)
		return n >= capConns, fmt.Sprintf("%d accepted", n)
	})
	select {
	case s := <-served:
		t.Fatalf("a request beyond the cap was answered (%s) while %d connections were held", s, capConns)
	case <-time.After(3 * time.Second):
	}
	atCap := adminConns(t, pid, addr)
	t.Logf("admin connections accepted by kmirror: %d of %d open (%d held, 1 request, %d more), cap %d", atCap, capConns+1+extra, capConns, extra, capConns)
	if atCap != capConns {
		t.Errorf("kmirror accepted %d admin connections, want the cap of %d", atCap, capConns)
	}
	for _, c := range held {
		c.Close()
	}
	select {
	case s := <-served:
		if s != "200 OK" {
			t.Fatalf("the waiting request: %s, want 200 OK", s)
		}
	case <-time.After(time.Minute):
		t.Fatal("the waiting request was not served within 1m of the held connections closing")
	}
	for _, c := range extras {
		c.Close()
	}
	waitFor(t, time.Minute, "/healthz and the cap metric", func() (bool, string) {
		code, _, body, err := adminGet(addr, "/metrics", "")
		ok := err == nil && code == http.StatusOK && strings.Contains(body, "kmirror_http_connection_limit_reached_total") &&
			!strings.Contains(body, "kmirror_http_connection_limit_reached_total 0\n")
		return ok, fmt.Sprintf("%d %v", code, err)
	})
	if code, _, _, err := adminGet(addr, "/healthz", ""); err != nil || code != http.StatusOK {
		t.Fatalf("GET /healthz after the connections closed: %d %v", code, err)
	}
}
