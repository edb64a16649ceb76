package server

import (
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// limitListener accepts at most cap(sem) connections at once. Beyond
// that, Accept waits for one to close: new connections wait in the
// kernel's accept queue rather than being read, so a flood of idle
// connections cannot take more file descriptors than the cap.
type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	open    prometheus.Gauge   // connections accepted and not closed
	waiting prometheus.Counter // times Accept found the cap reached
}

func newLimitListener(ln net.Listener, n int, open prometheus.Gauge, waiting prometheus.Counter) *limitListener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{}), open: open, waiting: waiting}
}

// Accept waits for a free slot, then for a connection.
func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	default:
		l.waiting.Inc()
		select {
		case l.sem <- struct{}{}:
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	l.open.Inc()
	return &limitConn{Conn: c, release: func() { l.open.Dec(); <-l.sem }}, nil
}

// Close stops the listener and any Accept waiting for a slot.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitConn frees its listener's slot when closed.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
