package e2e

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// tcpProxy forwards TCP connections to a broker, to put network faults
// between kmirror and a cluster. The broker must advertise the proxy's
// address (advertised.listeners), or clients would reach it directly after
// their first metadata request. A test can:
//
//   - delay the connections accepted for a while (slowFor), as a broker
//     slow to answer at start-up;
//   - cut every open connection and refuse new ones (cut), as a network
//     partition, until restore.
//
// The test's own clients go around the proxy with direct().
type tcpProxy struct {
	ln      net.Listener
	backend atomic.Value // string: the broker's address

	delay     time.Duration
	slowUntil atomic.Int64 // Unix ns; connections accepted before it are delayed
	delayed   atomic.Int64 // connections delayed so far
	refused   atomic.Int64 // connections refused while cut

	mu    sync.Mutex
	down  bool                  // cut: refuse new connections
	conns map[net.Conn]struct{} // both ends of every forwarded connection

	done chan struct{}
	wg   sync.WaitGroup
}

// startProxy listens on a free loopback port; connections are forwarded
// to the address given to setBackend (refused until then). delay is how
// long slowFor holds a connection. The proxy stops when the test ends.
func startProxy(t *testing.T, delay time.Duration) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, delay: delay, conns: map[net.Conn]struct{}{}, done: make(chan struct{})}
	p.backend.Store("")
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		close(p.done)
		ln.Close()
		p.cutAll()
		p.wg.Wait()
	})
	return p
}

func (p *tcpProxy) addr() string { return p.ln.Addr().String() }

// setBackend sets the broker address connections are forwarded to.
func (p *tcpProxy) setBackend(addr string) { p.backend.Store(addr) }

// slowFor delays the connections accepted during the next d.
func (p *tcpProxy) slowFor(d time.Duration) { p.slowUntil.Store(time.Now().Add(d).UnixNano()) }

// cut resets every open connection and refuses new ones until restore.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	p.down = true
	p.mu.Unlock()
	p.cutAll()
}

// restore forwards new connections again.
func (p *tcpProxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// cutAll resets every forwarded connection, both ends.
func (p *tcpProxy) cutAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		reset(c)
		delete(p.conns, c)
	}
}

// direct returns a client option that dials the broker behind the proxy
// instead of the proxy, so that a test's clients keep working while the
// proxy is cut.
func (p *tcpProxy) direct() kgo.Opt {
	return kgo.Dialer(func(ctx context.Context, network, host string) (net.Conn, error) {
		if host == p.addr() {
			host = p.backend.Load().(string)
		}
		var d net.Dialer
		return d.DialContext(ctx, network, host)
	})
}

// reset closes c with a TCP reset rather than an orderly close, as a
// connection broken by the network.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

// track registers the ends of a forwarded connection; it reports false
// (and resets them) if the proxy is cut.
func (p *tcpProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		for _, c := range cs {
			reset(c)
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *tcpProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
		c.Close()
	}
}

func (p *tcpProxy) serve(c net.Conn) {
	if !p.track(c) {
		p.refused.Add(1)
		return
	}
	defer p.untrack(c)
	if time.Now().UnixNano() < p.slowUntil.Load() {
		p.delayed.Add(1)
		select {
		case <-time.After(p.delay):
		case <-p.done:
			return
		}
	}
	backend := p.backend.Load().(string)
	if backend == "" {
		reset(c)
		return
	}
	b, err := net.Dial("tcp", backend)
	if err != nil {
		// The broker is down: reset, as a refused connection would.
		reset(c)
		return
	}
	if !p.track(b) {
		return
	}
	defer p.untrack(b)
	copied := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(b, c); copied <- struct{}{} }()
	go func() { _, _ = io.Copy(c, b); copied <- struct{}{} }()
	select {
	case <-copied:
	case <-p.done:
	}
}
