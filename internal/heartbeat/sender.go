package heartbeat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/retry"
)

// errorLogEvery bounds how often a failing writer or watcher logs.
const errorLogEvery = 30 * time.Second

// SenderOptions configure Send.
type SenderOptions struct {
	// Client writes to the cluster the heartbeats go to; build it with
	// ProducerOpts.
	Client *kgo.Client
	// Topic is the heartbeat topic on that cluster.
	Topic string
	// Cluster names that cluster's side in logs: "source" or "target".
	Cluster string
	// Probe, if set, is called before each write: a heartbeat is written
	// only when it succeeds, and carries the time it was called. A flow
	// writing heartbeats to its target probes its source with it, so
	// that the heartbeats stop when the source cannot be reached.
	Probe func(context.Context) error
	// Heartbeat is the record written; its TsMs is set at each write.
	Heartbeat Record
	Interval  time.Duration
	// Timeout bounds one write, topic creation included; 0 means
	// five intervals, at least 5 s.
	Timeout time.Duration
	// Access names kmirror on that cluster in errors about missing ACLs.
	Access kafka.Access
	// OnSent is called after each acknowledged heartbeat, OnError after
	// each failed attempt (both may be nil).
	OnSent  func()
	OnError func(error)
	Logger  *slog.Logger
}

// Send writes a heartbeat every interval until ctx ends. The heartbeat
// topic is created first if it does not exist. A failure (no CREATE or
// WRITE permission, cluster down, Probe failing) is logged once per 30 s,
// passed to OnError, and retried at the next interval; the recovery is
// logged once.
func Send(ctx context.Context, o SenderOptions) {
	if o.Timeout <= 0 {
		o.Timeout = max(5*o.Interval, 5*time.Second)
	}
	if o.Cluster == "" {
		o.Cluster = "source"
	}
	adm := kadm.NewClient(o.Client)
	errLog := retry.Throttle{Every: errorLogEvery}
	ensured, failing := false, false
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	for {
		err := sendOnce(ctx, o, adm, &ensured)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			failing = true
			if o.OnError != nil {
				o.OnError(err)
			}
			if errLog.Allow() {
				o.Logger.Error("cannot write heartbeats to the "+o.Cluster+"; replication goes on, retrying", "topic", o.Topic, "err", err)
			}
		default:
			if failing {
				failing = false
				o.Logger.Info("heartbeats written to the "+o.Cluster+" again", "topic", o.Topic)
			}
			if o.OnSent != nil {
				o.OnSent()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sendOnce creates the topic unless done before, then writes one
// heartbeat. A topic that cannot be created may exist all the same (the
// CREATE permission is missing but WRITE is granted): the write is tried
// anyway, and the creation error is returned only if the write fails
// because the topic is missing.
func sendOnce(ctx context.Context, o SenderOptions, adm *kadm.Client, ensured *bool) error {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var createErr error
	if !*ensured {
		if createErr = EnsureTopic(ctx, adm, o.Topic); createErr == nil {
			*ensured = true
		}
	}
	h := o.Heartbeat
	h.TsMs = time.Now().UnixMilli()
	if o.Probe != nil {
		if err := o.Probe(ctx); err != nil {
			return fmt.Errorf("no heartbeat written: %w", err)
		}
	}
	err := o.Client.ProduceSync(ctx, Encode(o.Topic, h)).FirstErr()
	if err == nil {
		*ensured = true
		return nil
	}
	if createErr != nil && (errors.Is(err, kerr.UnknownTopicOrPartition) || errors.Is(err, context.DeadlineExceeded)) {
		return o.Access.Name(createErr)
	}
	return fmt.Errorf("writing to heartbeat topic %q: %w", o.Topic, o.Access.Denied(kafka.OpWrite, kafka.ResTopic, o.Topic, err))
}
