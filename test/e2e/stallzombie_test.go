package e2e

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/verify"
)

// produceStallProxy forwards TCP connections to one broker and reads the
// requests of each connection frame by frame, so that it can stall the
// produce requests of one Kafka client ID: while stalled, a produce
// request of that client is held in the proxy (and nothing more of its
// connection is read) without closing anything; once the stall is lifted
// the held request goes on to the broker, then whatever followed it,
// including the end of the connection if the client closed or reset it
// meanwhile: a path that delays bytes but delivers them in order, like a
// congested link or a stalled middlebox. Every other request, and every
// response, is forwarded at once.
//
// The broker advertises the proxy's address, so that every client goes
// through it after its first metadata request; only connections of the
// stalled client ID are affected.
type produceStallProxy struct {
	ln       net.Listener
	backend  atomic.Value // string: the broker's address
	clientID string

	mu      sync.Mutex
	stalled bool
	lifted  chan struct{} // closed when the current stall is lifted
	conns   map[net.Conn]struct{}

	held      atomic.Int64 // produce requests of clientID held so far
	delivered atomic.Int64 // held requests written to the broker after the stall
	dropped   atomic.Int64 // held requests the broker connection no longer took

	done chan struct{}
	wg   sync.WaitGroup
}

func startProduceStallProxy(t *testing.T, clientID string) *produceStallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &produceStallProxy{ln: ln, clientID: clientID, conns: map[net.Conn]struct{}{}, done: make(chan struct{})}
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
		p.mu.Lock()
		for c := range p.conns {
			reset(c)
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *produceStallProxy) addr() string { return p.ln.Addr().String() }

// stall holds every produce request of the client ID from now on.
func (p *produceStallProxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stalled {
		p.stalled, p.lifted = true, make(chan struct{})
	}
}

// lift forwards the held requests and stops holding new ones.
func (p *produceStallProxy) lift() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stalled {
		p.stalled = false
		close(p.lifted)
	}
}

// direct returns a client option that dials the broker behind the proxy,
// for the test's own clients.
func (p *produceStallProxy) direct() kgo.Opt {
	return kgo.Dialer(func(ctx context.Context, network, host string) (net.Conn, error) {
		if host == p.addr() {
			host = p.backend.Load().(string)
		}
		var d net.Dialer
		return d.DialContext(ctx, network, host)
	})
}

func (p *produceStallProxy) track(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
}

func (p *produceStallProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

func (p *produceStallProxy) serve(c net.Conn) {
	b, err := net.Dial("tcp", p.backend.Load().(string))
	if err != nil {
		reset(c)
		return
	}
	p.track(c, b)
	defer func() {
		p.untrack(c, b)
		c.Close()
		b.Close()
	}()
	ended := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(c, b)
		ended <- struct{}{}
	}()
	go func() {
		err := p.forwardRequests(b, c)
		// The client's reset reaches the broker after what it sent before
		// it, as on a path that only delayed its bytes.
		var op *net.OpError
		if errors.As(err, &op) && strings.Contains(op.Err.Error(), "reset") {
			reset(b)
		}
		ended <- struct{}{}
	}()
	select {
	case <-ended:
	case <-p.done:
	}
}

// forwardRequests copies request frames from c to b, holding produce
// requests of the client ID while stalled.
func (p *produceStallProxy) forwardRequests(b, c net.Conn) error {
	var size [4]byte
	for {
		if _, err := io.ReadFull(c, size[:]); err != nil {
			return err
		}
		n := binary.BigEndian.Uint32(size[:])
		if n > 64<<20 {
			return fmt.Errorf("request of %d bytes", n)
		}
		frame := make([]byte, 4+n)
		copy(frame, size[:])
		if _, err := io.ReadFull(c, frame[4:]); err != nil {
			return err
		}
		heldNow := false
		if key, client, ok := requestHeader(frame[4:]); ok && key == int16(kmsg.Produce) && client == p.clientID {
			p.mu.Lock()
			stalled, lifted := p.stalled, p.lifted
			p.mu.Unlock()
			if stalled {
				heldNow = true
				p.held.Add(1)
				select {
				case <-lifted:
				case <-p.done:
					return net.ErrClosed
				}
			}
		}
		if _, err := b.Write(frame); err != nil {
			if heldNow {
				p.dropped.Add(1)
			}
			return err
		}
		if heldNow {
			p.delivered.Add(1)
		}
	}
}

// requestHeader reads the API key and client ID of a request (header v1
// and v2 both start with them; the client ID is a nullable string).
func requestHeader(b []byte) (key int16, clientID string, ok bool) {
	if len(b) < 10 {
		return 0, "", false
	}
	key = int16(binary.BigEndian.Uint16(b))
	l := int16(binary.BigEndian.Uint16(b[8:]))
	if l < 0 {
		return key, "", true
	}
	if len(b) < 10+int(l) {
		return 0, "", false
	}
	return key, string(b[10 : 10+int(l)]), true
}

// TestExactlyOnceStalledWritesNotDuplicated runs an exactly-once
// scale-out flow with two instances under steady traffic. The network to
// the target holds the produce requests of one of them (stalledID),
// neither delivered nor refused, while a third instance joins: the group
// revokes partitions from the stalled instance, whose release cannot
// drain, so it gives up its lease, and the others take the partitions
// over and write them. Then the stalled requests go on to the target. A
// read_committed reader of the target must find every source record
// exactly once, in source order per partition: the stalled instance's
// transaction is aborted and its late requests are refused (its producer
// epoch is gone) or aborted with it.
func TestExactlyOnceStalledWritesNotDuplicated(t *testing.T) {
	t.Parallel()
	testStalledWritesNotDuplicated(t, true)
}

// TestStalledWritesNotDuplicated is the same in the default
// (at-least-once) mode: each new owner fences the stalled instance's
// idempotent producer on the partitions it takes over. Its first copy is
// written under that producer's ID, epoch and next sequence, so the broker
// takes it only if no stalled request landed since the new owner compared
// the target (if one did, the partition is compared again), and the next
// under a higher epoch, so that the broker refuses the stalled requests
// arriving later. The stalled instance joins again and may own some of
// its partitions again, its new requests held too: whichever reaches the
// broker first, every record is on the target once, in order.
func TestStalledWritesNotDuplicated(t *testing.T) {
	t.Parallel()
	testStalledWritesNotDuplicated(t, false)
}

func testStalledWritesNotDuplicated(t *testing.T, exactlyOnce bool) {
	const (
		topic      = "events"
		partitions = 6
		stalledID  = "kmirror-stalled"
	)
	proxy := startProduceStallProxy(t, stalledID)
	src, dst := startBehindProxy(t, proxy.addr())
	proxy.backend.Store(dst.Bootstrap())
	p := &pair{src: src, dst: dst, srcCl: newClient(t, src.Bootstrap()), dstCl: newClient(t, dst.Bootstrap(), proxy.direct())}
	createTopic(t, p.srcCl, topic, partitions, nil)

	// The steady producer: one batch over every partition every 25 ms.
	var produced atomic.Int64
	var prodErr atomic.Value
	pctx, stopProducing := context.WithCancel(context.Background())
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		seq := make([]int, partitions)
		for n := 0; pctx.Err() == nil; n++ {
			recs := make([]*kgo.Record, 2*partitions)
			for i := range recs {
				part := i % partitions
				recs[i] = &kgo.Record{Topic: topic, Partition: int32(part), Key: fmt.Appendf(nil, "k%d", seq[part]),
					Value: fmt.Appendf(nil, "%d:%d", part, seq[part])}
				seq[part]++
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			err := p.srcCl.ProduceSync(ctx, recs...).FirstErr()
			cancel()
			if err != nil {
				prodErr.Store(err)
				return
			}
			produced.Add(int64(len(recs)))
			time.Sleep(25 * time.Millisecond)
		}
	}()
	stopProducer := func() {
		stopProducing()
		pwg.Wait()
		if err, _ := prodErr.Load().(error); err != nil {
			t.Fatalf("source producer: %v", err)
		}
	}
	t.Cleanup(func() { stopProducing(); pwg.Wait() })

	// Every instance reaches the target through the proxy; the first
	// one's client ID is the one stalled.
	start := func(clientID string) *proc {
		addr := freeAddr(t)
		return startKmirror(t, writeConfig(t, fmt.Sprintf(`clusters:
  src:
    bootstrap_servers: [%q]
  dst:
    bootstrap_servers: [%q]
    client_id: %s
flows:
  - name: e2e
    source: src
    target: dst
    topics: [%q]
    topic_naming: identity
    topic_refresh_interval: 500ms
    progress_interval: 200ms
    heartbeat_interval: off
    scale_out: true
    ownership_timeout: 6s
    exactly_once: %t
http:
  listen: %q
`, src.Bootstrap(), proxy.addr(), clientID, topic, exactlyOnce, addr)), addr)
	}
	stalled, other := start(stalledID), start("kmirror")
	procs := []*proc{stalled, other}
	waitFor(t, 60*time.Second, "both instances to own partitions, each partition exactly one", func() (bool, string) {
		owners, answered := ownership(procs)
		per := map[int]int{}
		for _, o := range owners {
			if len(o) != 1 {
				return false, describe(owners)
			}
			per[o[0]]++
		}
		return len(owners) == partitions && answered == 2 && len(per) == 2, describe(owners)
	})
	sparts, _ := owned(stalled)
	waitFor(t, 60*time.Second, "the target to hold every source record", func() (bool, string) {
		s, d := sum(endOffsets(t, p.srcCl, topic)), sum(endOffsets(t, p.dstCl, topic))
		return d >= s, fmt.Sprintf("source %d, target %d", s, d)
	})

	proxy.stall()
	stallStart := time.Now()
	waitFor(t, 20*time.Second, "a produce request of the stalled instance to be held", func() (bool, string) {
		return proxy.held.Load() > 0, "none held yet"
	})
	atStall := endOffsets(t, p.dstCl, topic)
	t.Logf("the proxy holds the produce requests of the instance owning partitions %v (target ends %v)", sparts, atStall)

	third := start("kmirror")
	procs = append(procs, third)
	took := waitFor(t, 45*time.Second, "the stalled instance to give up its lease", func() (bool, string) {
		return strings.Contains(stalled.output(), "gives up its lease"), "not logged yet"
	})
	t.Logf("the stalled instance gave up its lease (logged %.1fs after the third instance started, %.1fs after the stall began)",
		took.Seconds(), time.Since(stallStart).Seconds())
	// Writes of the stalled instance cannot reach the target, so a
	// partition it owned growing means another instance took it over.
	var takenOver []int32
	waitFor(t, 45*time.Second, "another instance to write a partition taken from the stalled one", func() (bool, string) {
		now := endOffsets(t, p.dstCl, topic)
		takenOver = takenOver[:0]
		for _, part := range sparts {
			if now[part] >= atStall[part]+24 {
				takenOver = append(takenOver, part)
			}
		}
		return len(takenOver) > 0, fmt.Sprintf("target ends %v, at the stall %v", now, atStall)
	})
	t.Logf("partitions %v taken over and written %.1fs after the stall began; %d produce requests held",
		takenOver, time.Since(stallStart).Seconds(), proxy.held.Load())

	proxy.lift()
	lifted := time.Now()
	waitFor(t, 30*time.Second, "the held produce requests to leave the proxy", func() (bool, string) {
		h, d, x := proxy.held.Load(), proxy.delivered.Load(), proxy.dropped.Load()
		return d+x >= h, fmt.Sprintf("%d held, %d delivered, %d dropped", h, d, x)
	})
	t.Logf("stall lifted after %.1fs: %d held produce requests delivered to the target, %d not (connection gone)",
		lifted.Sub(stallStart).Seconds(), proxy.delivered.Load(), proxy.dropped.Load())

	stopProducer()
	// The copy is complete once the target holds at least every source
	// record and stopped growing.
	var last string
	var since time.Time
	waitFor(t, 60*time.Second, "the target to hold every source record and stop growing", func() (bool, string) {
		s, d := endOffsets(t, p.srcCl, topic), endOffsets(t, p.dstCl, topic)
		if now := fmt.Sprint(d); now != last {
			last, since = now, time.Now()
		}
		return sum(d) >= sum(s) && time.Since(since) >= 2*time.Second, fmt.Sprintf("source %v, target %v", s, d)
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srcRecs, err := verify.ReadAll(ctx, p.srcCl, topic)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[int32]int{}
	for part, rs := range srcRecs {
		counts[part] = len(rs)
	}
	got := eosReadCommitted(t, dst.Bootstrap(), topic, partitions, counts, 60*time.Second)
	total := 0
	for part := range int32(partitions) {
		s, d := srcRecs[part], got[part]
		total += len(s)
		bad := -1
		for i := range min(len(s), len(d)) {
			if string(s[i].Value) != d[i] {
				bad = i
				break
			}
		}
		if bad < 0 && len(s) == len(d) {
			continue
		}
		if bad < 0 {
			bad = min(len(s), len(d))
		}
		t.Errorf("partition %d (owned by the stalled instance at the stall: %v): source %d records, read_committed target %d; first difference at the %dth record: target around it: %v",
			part, slices.Contains(sparts, part), len(s), len(d), bad, d[max(0, bad-3):min(len(d), bad+5)])
	}
	if t.Failed() {
		var lines []string
		for _, l := range strings.Split(stalled.output(), "\n") {
			if strings.Contains(l, "lease") || strings.Contains(l, "revoked") || strings.Contains(l, "lost the flow") || strings.Contains(l, "flow stop") {
				lines = append(lines, l)
			}
		}
		t.Logf("the stalled instance's log about its lease:\n%s", strings.Join(lines, "\n"))
		return
	}
	var fences, conditional, again int
	for _, pr := range procs {
		out := pr.output()
		fences += strings.Count(out, "earlier owner's producer fenced")
		conditional += strings.Count(out, "first copy written under an earlier owner's producer")
		again += strings.Count(out, "the partition is compared with the target again")
	}
	if !exactlyOnce && fences == 0 {
		t.Errorf("no instance logged fencing the stalled instance's producer")
	}
	t.Logf("end: %d records produced, every one on the target exactly once and in order per partition (%d records compared); logged: %d conditional first copies, %d partitions compared again, %d epochs raised",
		produced.Load(), total, conditional, again, fences)
}
