package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/test/certs"
)

// inq is how many bytes wait in the receive queue of a TCP connection.
func inq(t *testing.T, c *net.TCPConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ierr error
	if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatal(ierr)
	}
	return n
}

// waitFull waits until the receive queue of c stops growing: the writer
// is blocked in the middle of its write, its send buffer full.
func waitFull(t *testing.T, c *net.TCPConn) int {
	t.Helper()
	last, still := -1, 0
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		n := inq(t, c)
		if n == last && n > 0 {
			if still++; still == 5 {
				return n
			}
			continue
		}
		last, still = n, 0
	}
	t.Fatal("the receive queue never stopped growing")
	return 0
}

// gatedPair dials a listener on loopback through the gated dialer, with
// TLS if files is set, and returns the client and the accepted server
// connection, whose receive buffer is small so that a large write blocks.
func gatedPair(t *testing.T, files *tlsFiles, serverTLS *tls.Config, gt *gate) (net.Conn, *net.TCPConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		c.(*net.TCPConn).SetReadBuffer(64 << 10)
		if serverTLS != nil {
			tc := tls.Server(c, serverTLS)
			if err := tc.Handshake(); err != nil {
				c.Close()
				accepted <- nil
				return
			}
			accepted <- tc
			return
		}
		accepted <- c
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := dialer(5*time.Second, files, gt)(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server := <-accepted
	if server == nil {
		t.Fatal("accepting the connection failed")
	}
	t.Cleanup(func() { server.Close() })
	raw, ok := server.(*net.TCPConn)
	if !ok {
		raw = server.(*tls.Conn).NetConn().(*net.TCPConn)
	}
	return client, raw, server
}

// readAll reads r until an error and returns how much it read and the
// error.
func readAll(r io.Reader) (int, error) {
	buf := make([]byte, 64<<10)
	var total int
	for {
		n, err := r.Read(buf)
		total += n
		if err != nil {
			return total, err
		}
	}
}

// TestGateAbortDropsUnsentBytes writes 16 MiB in one Write over TCP on
// loopback to a reader that does not read, so the write blocks with the
// kernel's buffers full; then the gate ends. The connection must be
// reset, not closed gracefully: the bytes in the writer's send buffer are
// dropped, and the reader receives nothing beyond what had already
// reached its receive queue at the end.
func TestGateAbortDropsUnsentBytes(t *testing.T) {
	const total = 16 << 20
	g := &testGate{}
	client, raw, _ := gatedPair(t, nil, nil, newGate(g))
	type result struct {
		n   int
		err error
	}
	wrote := make(chan result, 1)
	go func() {
		n, err := client.Write(make([]byte, total))
		wrote <- result{n, err}
	}()
	waitFull(t, raw)
	g.end(true)
	queued := inq(t, raw)
	var r result
	select {
	case r = <-wrote:
	case <-time.After(10 * time.Second):
		t.Fatal("the write did not stop after the gate ended")
	}
	got, err := readAll(raw)
	t.Logf("the writer handed %d bytes to the kernel; %d were queued at the reader at the end; it read %d, then %v", r.n, queued, got, err)
	if got > queued {
		t.Fatalf("the reader received %d bytes, %d more than had reached it when the gate ended", got, got-queued)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the reader's last read: %v, want a connection reset", err)
	}
	if r.err == nil || r.n >= total {
		t.Fatalf("Write = %d, %v; want an error before %d bytes", r.n, r.err, total)
	}
}

// TestGateAbortsTLSAtTheTCPConnection: over TLS, the gate's end resets the
// TCP connection under TLS (no close_notify, nothing more delivered).
func TestGateAbortsTLSAtTheTCPConnection(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.NewCA("CA")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("broker", certs.Options{Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	files := newTLSFiles(&config.TLS{Enabled: true, CAFile: caFile})
	g := &testGate{}
	client, raw, server := gatedPair(t, files, &tls.Config{Certificates: []tls.Certificate{cert}}, newGate(g))
	if _, ok := client.(*tls.Conn); !ok {
		t.Fatalf("the dialer returned a %T, want TLS", client)
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := client.Write(make([]byte, 16<<20))
		wrote <- err
	}()
	waitFull(t, raw)
	g.end(true)
	queued := inq(t, raw)
	select {
	case err := <-wrote:
		if err == nil {
			t.Fatal("the write went through after the gate ended")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the write did not stop after the gate ended")
	}
	got, err := readAll(server)
	t.Logf("%d bytes were queued at the reader at the end; it read %d plaintext bytes, then %v", queued, got, err)
	if got > queued {
		t.Fatalf("the reader received %d plaintext bytes, more than the %d bytes that had reached it when the gate ended", got, queued)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the reader's last read: %v, want a connection reset", err)
	}
}
