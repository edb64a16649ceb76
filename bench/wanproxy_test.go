package main

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// startEcho starts a server that writes back what it reads, or, with
// sink, discards it and answers one byte once the sender half-closed.
func startEcho(t *testing.T, sink bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if sink {
					_, _ = io.Copy(io.Discard, c)
					_, _ = c.Write([]byte{1})
					return
				}
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func newTestLink(t *testing.T, backend string, s linkShape) *wanLink {
	t.Helper()
	l, err := newWANLink("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.close)
	l.setBackend(backend)
	l.setShape(s)
	return l
}

// roundTrip writes msg and reads it back, returning how long it took.
func roundTrip(t *testing.T, c net.Conn, msg []byte) time.Duration {
	t.Helper()
	start := time.Now()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo changed the bytes")
	}
	return time.Since(start)
}

func TestLinkAddsTheRoundTripTime(t *testing.T) {
	if testing.Short() {
		t.Skip("timing test")
	}
	const rtt = 100 * time.Millisecond
	l := newTestLink(t, startEcho(t, false), linkShape{rtt: rtt})
	c, err := net.Dial("tcp", l.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The first exchange pays for the handshake too.
	if d := roundTrip(t, c, []byte("hello")); d < 2*rtt-5*time.Millisecond || d > 2*rtt+80*time.Millisecond {
		t.Errorf("first round trip took %v, want about %v", d, 2*rtt)
	}
	for range 3 {
		if d := roundTrip(t, c, []byte("again")); d < rtt-5*time.Millisecond || d > rtt+80*time.Millisecond {
			t.Errorf("round trip took %v, want about %v", d, rtt)
		}
	}
	// The proxy counts a chunk once its write returned, which may be
	// after the client read it.
	deadline := time.Now().Add(time.Second)
	for {
		up, down := l.bytes()
		if up == 20 && down == 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("link counted %d bytes up and %d down, want 20 each", up, down)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestLinkIsAPipeline: a stream much longer than one round trip's worth
// of chunks takes its size over the bandwidth plus one trip, not one
// round trip per chunk.
func TestLinkIsAPipeline(t *testing.T) {
	if testing.Short() {
		t.Skip("timing test of a second")
	}
	const (
		rtt  = 100 * time.Millisecond
		bps  = 40_000_000 // 5 MB/s
		size = 4_000_000  // 0.8 s at 5 MB/s; 61 chunks of 64 KiB
	)
	l := newTestLink(t, startEcho(t, true), linkShape{rtt: rtt, bitsPerSec: bps})
	took := sendAll(t, l.addr(), size)
	want := rtt + rtt + time.Duration(float64(size)/(bps/8)*float64(time.Second)) // handshake, the data, the answer's way back
	if took < want-50*time.Millisecond || took > want+400*time.Millisecond {
		t.Errorf("%d bytes took %v through the link, want about %v", size, took, want)
	}
}

// TestLinkWindow: with a window, a stream moves one window per round
// trip.
func TestLinkWindow(t *testing.T) {
	if testing.Short() {
		t.Skip("timing test of a second")
	}
	const (
		rtt    = 100 * time.Millisecond
		window = 1 << 20
		size   = 6 << 20
	)
	l := newTestLink(t, startEcho(t, true), linkShape{rtt: rtt, window: window})
	took := sendAll(t, l.addr(), size)
	// The handshake, then six windows, each sent once the previous one's
	// acknowledgement is back (the last one needs only the way there),
	// and the answer's way back.
	want := rtt + 5*rtt + rtt/2 + rtt/2
	if took < want-50*time.Millisecond || took > want+400*time.Millisecond {
		t.Errorf("%d bytes took %v through a window of %d, want about %v", size, took, window, want)
	}
}

// sendAll sends size bytes to a sink through addr, half-closes, and waits
// for the sink's answer.
func sendAll(t *testing.T, addr string, size int) time.Duration {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := c.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("reading the sink's answer: %v", err)
	}
	return time.Since(start)
}

func TestLinkReshapeCutsConnections(t *testing.T) {
	l := newTestLink(t, startEcho(t, false), linkShape{})
	c, err := net.Dial("tcp", l.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, []byte("x"))
	l.setShape(linkShape{rtt: 10 * time.Millisecond})
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after the link was reshaped")
	}
}
