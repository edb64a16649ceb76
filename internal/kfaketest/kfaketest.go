// Package kfaketest starts franz-go's in-process fake Kafka (kfake) for
// unit tests and gives them clients of it, closed when the test ends.
// Tests against real Apache Kafka use test/kafkatest instead.
package kfaketest

import (
	"crypto/rand"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Cluster starts a one-broker fake cluster with the extra options, closed
// when the test ends. Each cluster has a cluster ID of its own, as real
// clusters do (kfake's default is the same for all): the provenance
// header names clusters by it.
func Cluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.ClusterID("kfake-" + rand.Text())}, opts...)...)
	if err != nil {
		t.Fatalf("starting a fake Kafka cluster: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// Client returns a client of c with the given options, closed when the
// test ends.
func Client(t testing.TB, c *kfake.Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, opts...)...)
	if err != nil {
		t.Fatalf("creating a client of the fake cluster: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// New starts a fake cluster and returns a client of it.
func New(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	return Client(t, Cluster(t), opts...)
}
