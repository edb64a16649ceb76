package kafka

import (
	"crypto/tls"
	"net"
	"sync"
)

// Gate decides whether a client may still write to its cluster; once it
// refuses, it never allows again. A flow's target clients are gated by
// the flow's ownership lease (*ownership.Lease).
type Gate interface {
	// Allow returns nil while writes are allowed, else the error the
	// refused write fails with. It is asked before every chunk.
	Allow() error
	// OnEnd calls f once when writes stop being allowed (at once if
	// they already are not); remove forgets f.
	OnEnd(f func()) (remove func())
}

// gateChunk bounds what one write hands to the kernel after one look at
// the gate. Without TLS, franz-go writes a whole produce request (up to
// many megabytes) in one call; a process paused in that call would go on
// sending it when it resumes.
const gateChunk = 64 << 10

// gate tracks the connections a gated client opened, so that all of them
// are aborted when the gate closes.
type gate struct {
	g Gate

	mu     sync.Mutex
	conns  map[*gatedConn]struct{}
	closed bool
}

func newGate(g Gate) *gate {
	gt := &gate{g: g, conns: map[*gatedConn]struct{}{}}
	g.OnEnd(gt.abortAll)
	return gt
}

// allow asks the gate; a refusal aborts every connection.
func (gt *gate) allow() error {
	err := gt.g.Allow()
	if err != nil {
		gt.abortAll()
	}
	return err
}

// abortAll aborts every connection, now and later.
func (gt *gate) abortAll() {
	gt.mu.Lock()
	gt.closed = true
	conns := gt.conns
	gt.conns = map[*gatedConn]struct{}{}
	gt.mu.Unlock()
	for c := range conns {
		abortConn(c.Conn)
	}
}

// add tracks c, or aborts it if the gate closed meanwhile.
func (gt *gate) add(c *gatedConn) bool {
	gt.mu.Lock()
	closed := gt.closed
	if !closed {
		gt.conns[c] = struct{}{}
	}
	gt.mu.Unlock()
	if closed {
		abortConn(c.Conn)
	}
	return !closed
}

func (gt *gate) remove(c *gatedConn) {
	gt.mu.Lock()
	delete(gt.conns, c)
	gt.mu.Unlock()
}

// gatedConn asks the gate before every chunk of at most gateChunk bytes it
// writes. It sits under TLS, so it sees every record sent.
type gatedConn struct {
	net.Conn
	gate *gate
}

func (c *gatedConn) Write(b []byte) (int, error) {
	var n int
	for len(b) > 0 {
		if err := c.gate.allow(); err != nil {
			return n, err
		}
		k := min(len(b), gateChunk)
		w, err := c.Conn.Write(b[:k])
		n += w
		if err != nil {
			if gerr := c.gate.g.Allow(); gerr != nil {
				return n, gerr // aborted because the gate closed
			}
			return n, err
		}
		b = b[k:]
	}
	return n, nil
}

func (c *gatedConn) Close() error {
	c.gate.remove(c)
	return c.Conn.Close()
}

// abortConn closes c at once and drops what the kernel has not sent: a TCP
// connection is reset (SO_LINGER 0) instead of closed gracefully, since
// after a graceful close the kernel goes on sending, and retransmits once
// a network partition heals, every byte still in its send buffer. A TLS
// connection is aborted at the connection under it, without close_notify.
func abortConn(c net.Conn) {
	for {
		switch v := c.(type) {
		case *tls.Conn:
			c = v.NetConn()
			continue
		case *gatedConn:
			c = v.Conn
			continue
		}
		break
	}
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = l.SetLinger(0)
	}
	_ = c.Close()
}
