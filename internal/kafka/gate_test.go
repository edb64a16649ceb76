package kafka

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var errTestGate = errors.New("test gate closed")

// testGate allows until end is called; end runs the OnEnd hooks only if
// told to, so that a test sees what the chunks alone bound.
type testGate struct {
	mu     sync.Mutex
	ended  bool
	hooks  []func()
	allows atomic.Int64
}

func (g *testGate) Allow() error {
	g.allows.Add(1)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ended {
		return errTestGate
	}
	return nil
}

func (g *testGate) OnEnd(f func()) func() {
	g.mu.Lock()
	if g.ended {
		g.mu.Unlock()
		f()
		return func() {}
	}
	g.hooks = append(g.hooks, f)
	g.mu.Unlock()
	return func() {}
}

func (g *testGate) end(runHooks bool) {
	g.mu.Lock()
	g.ended = true
	hooks := g.hooks
	g.hooks = nil
	g.mu.Unlock()
	if runHooks {
		for _, f := range hooks {
			f()
		}
	}
}

// TestGatedWriteStopsMidWrite writes 1 MiB in one Write over a blocking
// pipe whose reader is slow, and ends the gate once the reader has 100
// KiB. When the gate's end aborts the connection, the reader receives no
// byte after the end. When only the chunks' looks at the gate notice the
// end, the reader receives at most the rest of the chunk in progress.
func TestGatedWriteStopsMidWrite(t *testing.T) {
	const total, endAt = 1 << 20, 100 << 10
	for _, tc := range []struct {
		name     string
		abort    bool
		maxAfter int
	}{
		{"the end aborts the connection", true, 0},
		{"the next chunk asks the gate", false, gateChunk},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer server.Close()
			server.SetReadDeadline(time.Now().Add(10 * time.Second))
			g := &testGate{}
			gt := newGate(g)
			conn := &gatedConn{Conn: client, gate: gt}
			if !gt.add(conn) {
				t.Fatal("gate closed before the test")
			}
			type result struct {
				n   int
				err error
			}
			wrote := make(chan result, 1)
			go func() {
				n, err := conn.Write(make([]byte, total))
				wrote <- result{n, err}
			}()
			var before, after int
			ended := false
			buf := make([]byte, 4<<10)
			for {
				n, err := server.Read(buf)
				if ended {
					after += n
				} else {
					before += n
				}
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break // the connection stayed open
				}
				if err != nil {
					if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
						t.Fatalf("reader: %v", err)
					}
					break
				}
				if !ended && before >= endAt {
					g.end(tc.abort)
					ended = true
				}
				time.Sleep(100 * time.Microsecond) // a slow reader
			}
			r := <-wrote
			t.Logf("read %d bytes before the end, %d after; the write returned %d, %v; %d looks at the gate", before, after, r.n, r.err, g.allows.Load())
			if after > tc.maxAfter {
				t.Fatalf("%d bytes reached the reader after the gate ended, want at most %d", after, tc.maxAfter)
			}
			if r.err == nil || r.n >= total || r.n != before+after {
				t.Fatalf("Write = %d, %v; want an error after %d bytes", r.n, r.err, before+after)
			}
			if !errors.Is(r.err, errTestGate) {
				t.Fatalf("Write error %v, want the gate's", r.err)
			}
			if want := int64(endAt / gateChunk); g.allows.Load() < want {
				t.Fatalf("%d looks at the gate for %d bytes, want one per chunk of %d", g.allows.Load(), before, gateChunk)
			}
		})
	}
}

// TestGateRefusesNewConnections: once the gate has ended, a connection
// being added is aborted at once.
func TestGateRefusesNewConnections(t *testing.T) {
	g := &testGate{}
	gt := newGate(g)
	g.end(true)
	client, server := net.Pipe()
	defer server.Close()
	if gt.add(&gatedConn{Conn: client, gate: gt}) {
		t.Fatal("a connection was added after the gate ended")
	}
	if _, err := client.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("write on the refused connection: %v, want it closed", err)
	}
}
