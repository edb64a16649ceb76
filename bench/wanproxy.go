package main

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// linkShape is what an emulated long link adds to every connection that
// crosses it.
type linkShape struct {
	// rtt is the round-trip time: half of it is added in each direction.
	// A new connection also waits one rtt before its first bytes leave,
	// as for the TCP handshake.
	rtt time.Duration
	// bitsPerSec is the bandwidth of each direction, shared by every
	// connection through the link; 0 is unlimited.
	bitsPerSec int64
	// window, if positive, is the most bytes one connection has in flight
	// in one direction: read from the sender and not yet acknowledged by
	// the receiver's side half an rtt after they were delivered, as a TCP
	// window (the smaller of the sender's send buffer and the receiver's
	// receive buffer) limits a real connection. 0 leaves only the link's
	// own limit (bandwidth × delay).
	window int
}

func (s linkShape) String() string {
	out := fmt.Sprintf("RTT %s", s.rtt)
	if s.bitsPerSec > 0 {
		out += fmt.Sprintf(", %s", bitRate(s.bitsPerSec))
	}
	if s.window > 0 {
		out += fmt.Sprintf(", window %.0f KiB", float64(s.window)/1024)
	}
	return out
}

// bitRate renders a bandwidth.
func bitRate(bps int64) string {
	if bps%1e9 == 0 {
		return fmt.Sprintf("%d Gbit/s", bps/1e9)
	}
	return fmt.Sprintf("%d Mbit/s", bps/1e6)
}

const (
	// chunkBytes is the most one read takes from a sender.
	chunkBytes = 64 << 10
	// lineChunks bounds the chunks in one direction's delay line, so that
	// a receiver that stops reading holds up at most lineChunks ×
	// chunkBytes in the proxy (far above a 1 Gbit/s link's
	// bandwidth-delay product at 150 ms).
	lineChunks = 1024
	// paceAhead is how far a sender may run ahead of the link's
	// serialisation before it waits: the queue in front of the link.
	paceAhead = 2 * time.Millisecond
	// dialTimeout bounds the connection to the broker behind the link.
	dialTimeout = 5 * time.Second
)

var chunkPool = sync.Pool{New: func() any { b := make([]byte, chunkBytes); return &b }}

// wanLink is a TCP proxy in front of one broker that makes the loopback
// connections through it behave like a long link: in each direction the
// bytes pass a delay line, so that bytes read from one end at time t are
// written to the other at t + rtt/2 (plus the time the link's bandwidth
// takes to carry them), while later bytes follow behind them. Throughput
// is therefore bounded by the bandwidth (and a window, if set), not by the
// round-trip time, as on a real link whose endpoints keep enough in
// flight.
//
// Clients learn broker addresses from metadata, so the broker must
// advertise the proxy's address on the listener the proxy forwards to (a
// listener of its own: clients of the other listener go around the
// proxy).
//
// Packet loss is not emulated: both ends' TCP connections run over
// loopback, so a lost segment would be recovered in microseconds, not in
// round trips of the emulated link.
type wanLink struct {
	name string
	ln   net.Listener

	mu       sync.Mutex
	backend  string
	shape    linkShape
	up, down *pacer // client → broker, broker → client
	conns    map[*wanConn]struct{}
	closed   bool
	// gen counts setShape calls: a connection accepted under an earlier
	// shape is not kept.
	gen int

	// upBytes and downBytes count the bytes delivered in each direction
	// since the last setShape.
	upBytes, downBytes atomic.Int64
	wg                 sync.WaitGroup
}

// newWANLink listens on a free loopback port. Connections are refused
// until setBackend.
func newWANLink(name string) (*wanLink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("link %s: listening: %w", name, err)
	}
	l := &wanLink{name: name, ln: ln, conns: map[*wanConn]struct{}{}, up: &pacer{}, down: &pacer{}}
	l.wg.Add(1)
	go l.accept()
	return l, nil
}

// addr is the address clients connect to, and the broker advertises.
func (l *wanLink) addr() string { return l.ln.Addr().String() }

// setBackend sets the broker listener connections are forwarded to.
func (l *wanLink) setBackend(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.backend = addr
}

// setShape cuts every open connection, so that none carries on with the
// old shape, and applies s to the connections accepted from now on. It
// resets the byte counters.
func (l *wanLink) setShape(s linkShape) {
	l.mu.Lock()
	conns := l.conns
	l.conns = map[*wanConn]struct{}{}
	l.shape = s
	l.gen++
	rate := float64(s.bitsPerSec) / 8
	l.up, l.down = &pacer{bytesPerSec: rate}, &pacer{bytesPerSec: rate}
	l.upBytes.Store(0)
	l.downBytes.Store(0)
	l.mu.Unlock()
	for c := range conns {
		c.close()
	}
}

// bytes returns the bytes delivered to the broker (up) and to the clients
// (down) since the last setShape.
func (l *wanLink) bytes() (up, down int64) { return l.upBytes.Load(), l.downBytes.Load() }

// close stops the proxy and cuts every connection.
func (l *wanLink) close() {
	l.mu.Lock()
	l.closed = true
	conns := l.conns
	l.conns = map[*wanConn]struct{}{}
	l.mu.Unlock()
	l.ln.Close()
	for c := range conns {
		c.close()
	}
	l.wg.Wait()
}

func (l *wanLink) accept() {
	defer l.wg.Done()
	for {
		client, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.serve(client.(*net.TCPConn))
		}()
	}
}

// serve forwards one client connection through the link until either end
// closes it or the link is reshaped.
func (l *wanLink) serve(client *net.TCPConn) {
	accepted := time.Now()
	l.mu.Lock()
	backend, shape, up, down, closed, gen := l.backend, l.shape, l.up, l.down, l.closed, l.gen
	l.mu.Unlock()
	if backend == "" || closed {
		_ = client.Close()
		return
	}
	conn, err := net.DialTimeout("tcp", backend, dialTimeout)
	if err != nil {
		_ = client.Close()
		return
	}
	broker := conn.(*net.TCPConn)
	c := &wanConn{client: client, broker: broker, done: make(chan struct{})}
	l.mu.Lock()
	if l.closed || l.gen != gen {
		l.mu.Unlock()
		c.close()
		return
	}
	l.conns[c] = struct{}{}
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
		c.close()
	}()

	oneWay := shape.rtt / 2
	var dirs sync.WaitGroup
	// The client's first bytes wait for the handshake: one round trip.
	dirs.Go(func() {
		c.forward(client, broker, up, oneWay, accepted.Add(shape.rtt), shape.window, &l.upBytes)
	})
	dirs.Go(func() {
		c.forward(broker, client, down, oneWay, time.Time{}, shape.window, &l.downBytes)
	})
	dirs.Wait()
}

// wanConn is one client connection through the link and its connection to
// the broker.
type wanConn struct {
	client, broker *net.TCPConn
	done           chan struct{} // closed when the connection is torn down
	once           sync.Once
}

// close tears both connections down.
func (c *wanConn) close() {
	c.once.Do(func() {
		close(c.done)
		_ = c.client.Close()
		_ = c.broker.Close()
	})
}

// chunk is bytes on their way through a delay line.
type chunk struct {
	buf *[]byte
	n   int
	due time.Time // when they reach the other end
}

// forward carries src's bytes to dst through a delay line: a reader takes
// them from src as the link's bandwidth (and the window) allows and stamps
// each chunk with the time it reaches the far end; a writer hands each
// chunk to dst at that time. The bytes of a chunk leave the link when
// their last bit has crossed it. notBefore, if set, holds the first
// bytes back until then. When src ends, dst is half-closed after the
// last chunk; on any error both connections are torn down.
func (c *wanConn) forward(src, dst *net.TCPConn, p *pacer, delay time.Duration, notBefore time.Time, window int, delivered *atomic.Int64) {
	line := make(chan chunk, lineChunks)
	f := newFlight(window)
	var writer sync.WaitGroup
	writer.Go(func() {
		if c.deliver(dst, line, delay, f, delivered) {
			_ = dst.CloseWrite()
		}
	})
	defer writer.Wait()
	defer close(line)
	for {
		room := f.room(c.done)
		if room == 0 {
			return // torn down
		}
		buf := chunkPool.Get().(*[]byte)
		n, err := src.Read((*buf)[:min(room, chunkBytes)])
		if n > 0 {
			f.add(n)
			now := time.Now()
			offered := now
			if offered.Before(notBefore) {
				offered = notBefore // after the handshake
			}
			left := p.send(offered, n)
			select {
			case line <- chunk{buf: buf, n: n, due: left.Add(delay)}:
			case <-c.done:
				return
			}
			// The sender may run ahead of the link by paceAhead: the
			// queue in front of it.
			if wait := left.Sub(now) - paceAhead; wait > 0 {
				if !sleepOrDone(wait, c.done) {
					return
				}
			}
		} else {
			chunkPool.Put(buf)
		}
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				// EOF (the sender half-closed) or a reset: the writer
				// passes on what is in the line, then half-closes.
				return
			}
			c.close()
			return
		}
	}
}

// deliver writes each chunk of line to dst when it is due and reports
// whether line ended normally (false: the connection was torn down).
func (c *wanConn) deliver(dst *net.TCPConn, line <-chan chunk, delay time.Duration, f *flight, delivered *atomic.Int64) bool {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ch := range line {
		if wait := time.Until(ch.due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-c.done:
				chunkPool.Put(ch.buf)
				drain(line)
				return false
			}
		}
		_, err := dst.Write((*ch.buf)[:ch.n])
		chunkPool.Put(ch.buf)
		if err != nil {
			c.close()
			drain(line)
			return false
		}
		delivered.Add(int64(ch.n))
		// The acknowledgement takes the way back.
		f.ack(time.Now().Add(delay), ch.n)
	}
	return true
}

// drain returns the buffers of the chunks left in line to the pool until
// line is closed.
func drain(line <-chan chunk) {
	for ch := range line {
		chunkPool.Put(ch.buf)
	}
}

// sleepOrDone waits for d and reports false if done was closed first.
func sleepOrDone(d time.Duration, done <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

// pacer serialises one direction of the link at its bandwidth.
type pacer struct {
	mu          sync.Mutex
	bytesPerSec float64 // 0: unlimited
	next        time.Time
}

// send reserves the link for n bytes offered at now and returns when
// their last bit has left: after the bytes already reserved, at the
// link's bandwidth.
func (p *pacer) send(now time.Time, n int) time.Time {
	if p.bytesPerSec <= 0 {
		return now
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	start := p.next
	if start.Before(now) {
		start = now
	}
	p.next = start.Add(time.Duration(float64(n) / p.bytesPerSec * float64(time.Second)))
	return p.next
}

// flight counts one direction's bytes in flight against a window: read
// from the sender and not yet acknowledged.
type flight struct {
	max int // 0: no window

	mu       sync.Mutex
	inflight int
	acks     []pendingAck // in time order
	wake     chan struct{}
}

// pendingAck is an acknowledgement on its way back to the sender.
type pendingAck struct {
	at time.Time
	n  int
}

func newFlight(window int) *flight {
	return &flight{max: window, wake: make(chan struct{}, 1)}
}

// room waits until the window has room and returns how many bytes the
// sender may send; 0 once done is closed. Without a window it returns
// chunkBytes at once.
func (f *flight) room(done <-chan struct{}) int {
	select {
	case <-done:
		return 0
	default:
	}
	if f.max <= 0 {
		return chunkBytes
	}
	for {
		f.mu.Lock()
		now := time.Now()
		i := 0
		for ; i < len(f.acks) && !f.acks[i].at.After(now); i++ {
			f.inflight -= f.acks[i].n
		}
		f.acks = f.acks[i:]
		room := f.max - f.inflight
		var next time.Duration = -1
		if len(f.acks) > 0 {
			next = f.acks[0].at.Sub(now)
		}
		f.mu.Unlock()
		if room > 0 {
			return room
		}
		if !f.wait(next, done) {
			return 0
		}
	}
}

// wait waits for an acknowledgement: the next one due in d (none is
// known while d < 0) or one added meanwhile. It reports false once done
// is closed.
func (f *flight) wait(d time.Duration, done <-chan struct{}) bool {
	var timeout <-chan time.Time
	if d >= 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-done:
		return false
	case <-timeout:
	case <-f.wake:
	}
	return true
}

// add counts n bytes sent.
func (f *flight) add(n int) {
	if f.max <= 0 {
		return
	}
	f.mu.Lock()
	f.inflight += n
	f.mu.Unlock()
}

// ack notes that n bytes delivered will be acknowledged at at.
func (f *flight) ack(at time.Time, n int) {
	if f.max <= 0 {
		return
	}
	f.mu.Lock()
	f.acks = append(f.acks, pendingAck{at: at, n: n})
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}
