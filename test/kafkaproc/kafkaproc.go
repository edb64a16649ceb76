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
	"net"
	"strings"
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
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
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
