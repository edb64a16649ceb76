// Package kafkaproc holds what the real-Kafka test harness (test/kafkatest),
// the benchmark (bench) and scripts/kafka/kafka.sh (through serverprops)
// share to run a KRaft broker as a child process: its server.properties
// and log configuration, a cluster id for the storage tool, free loopback
// ports, and a readiness probe.
package kafkaproc

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// NewClusterID returns a random cluster id in Kafka's Uuid form that does
// not start with '-' (which the storage tool would take for a flag).
func NewClusterID() (string, error) {
	var b [16]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("generating a cluster id: %w", err)
		}
		if id := base64.RawURLEncoding.EncodeToString(b[:]); !strings.HasPrefix(id, "-") {
			return id, nil
		}
	}
}

// FreePorts returns n distinct TCP ports that were free on 127.0.0.1. They
// are held open together so that they differ, then released for Kafka.
//
// The ports are taken below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range) where there is room: the port of an
// outgoing connection comes from that range, so a port picked there can be
// taken by any client's connection between its release here and the
// broker binding it (or binding it again on a restart). A port is never
// handed out twice by one process. Without room below the range, the
// kernel picks (port 0).
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := listenFree()
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// lowestPort is the bottom of the range FreePorts draws from below the
// ephemeral range.
const lowestPort = 15000

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{} // by FreePorts, in this process
)

// listenFree listens on a port of 127.0.0.1 that FreePorts has not handed
// out before, below the ephemeral range if it can.
func listenFree() (net.Listener, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	if lo, ok := ephemeralLow(); ok && lo-lowestPort >= 1000 {
		for range 200 {
			port := lowestPort + mrand.IntN(lo-lowestPort)
			if portsGiven[port] {
				continue
			}
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err != nil {
				continue // in use
			}
			portsGiven[port] = true
			return l, nil
		}
	}
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		if port := l.Addr().(*net.TCPAddr).Port; !portsGiven[port] {
			portsGiven[port] = true
			return l, nil
		}
		l.Close()
	}
	return nil, errors.New("no port that was not handed out before")
}

// ephemeralLow returns the first port of the kernel's ephemeral range, on
// Linux.
func ephemeralLow() (int, bool) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, false
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil || lo <= 0 || lo > 65535 {
		return 0, false
	}
	return lo, true
}

// Ping asks the broker at bootstrap for the cluster's brokers with a fresh
// client, within timeout, and fails until one is registered.
func Ping(ctx context.Context, bootstrap string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.DialTimeout(time.Second))
	if err != nil {
		return fmt.Errorf("creating a client: %w", err)
	}
	defer cl.Close()
	brokers, err := kadm.NewClient(cl).ListBrokers(ctx)
	if err != nil {
		return fmt.Errorf("listing brokers: %w", err)
	}
	if len(brokers) == 0 {
		return errors.New("listing brokers: none registered yet")
	}
	return nil
}

// Brokers returns how many brokers the broker at bootstrap lists, asking
// with a fresh client within timeout.
func Brokers(ctx context.Context, bootstrap string, timeout time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.DialTimeout(time.Second))
	if err != nil {
		return 0, fmt.Errorf("creating a client: %w", err)
	}
	defer cl.Close()
	brokers, err := kadm.NewClient(cl).ListBrokers(ctx)
	if err != nil {
		return 0, fmt.Errorf("listing brokers: %w", err)
	}
	return len(brokers), nil
}
