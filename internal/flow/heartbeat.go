package flow

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/heartbeat"
	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/retry"
)

// heartbeats writes a heartbeat record every heartbeat interval and
// watches them arrive on the target, until ctx ends, so that
// kmirror_heartbeat_age_seconds grows as soon as anything on the way
// stops: the source, the flow, or the target.
//
// With heartbeat_location: target (the default) the heartbeat goes to the
// target's heartbeat topic, written only after the source answered a
// metadata request sent through the client the data plane reads it with:
// the source is only read. With heartbeat_location: source it goes to the
// source's heartbeat topic, which the flow replicates like data (see
// policy.Topics.Matches). Faults are counted as kind heartbeat and never
// stop replication.
func (r *run) heartbeats(ctx context.Context) {
	name := r.cfg.Name
	defer r.metrics.HeartbeatAge.DeleteLabelValues(name)
	defer r.metrics.HeartbeatLatency.DeleteLabelValues(name)
	countError := func(error) { r.metrics.Errors.WithLabelValues(name, metrics.ErrHeartbeat).Inc() }

	onSource := r.cfg.HeartbeatsOnSource()
	dest, side, topic := r.target, "target", r.naming.HeartbeatTargetTopic()
	var probe func(context.Context) error
	if onSource {
		dest, side, topic = r.source, "source", r.naming.HeartbeatTopic()
	} else {
		probe = r.probeSource
	}
	writer := r.heartbeatClient(ctx, dest, heartbeat.ProducerOpts())
	if writer == nil {
		return
	}
	defer writer.Close()
	targetTopic := r.naming.HeartbeatTargetTopic()
	reader := r.heartbeatClient(ctx, r.target, heartbeat.ConsumerOpts(targetTopic))
	if reader == nil {
		return
	}
	defer reader.Close()

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		heartbeat.Send(ctx, heartbeat.SenderOptions{
			Client:    writer,
			Topic:     topic,
			Cluster:   side,
			Probe:     probe,
			Heartbeat: heartbeat.Record{Flow: name, Source: r.cfg.Source, Target: r.cfg.Target},
			Interval:  r.cfg.HeartbeatInterval,
			Access:    kafka.AccessOf(dest),
			OnSent:    func() { r.metrics.HeartbeatsSent.WithLabelValues(name).Inc() },
			OnError:   countError,
			Logger:    r.logger.With("cluster", dest.Alias),
		})
	}()
	w := heartbeat.NewWatcher(heartbeat.WatcherOptions{
		Flow:  name,
		OnAge: func(age time.Duration) { r.metrics.HeartbeatAge.WithLabelValues(name).Set(age.Seconds()) },
		OnArrival: func(s heartbeat.Seen) {
			r.metrics.HeartbeatLatency.WithLabelValues(name).Set(s.Latency.Seconds())
		},
		OnError: countError,
		Logger:  r.logger.With("cluster", r.cfg.Target),
	})
	w.Run(ctx, reader)
}

// probeSource asks the source for its metadata (brokers and cluster ID, no
// topics: a request every principal may make) through the client the data
// plane reads it with, so a heartbeat on the target says that this client
// reached the source. The request is sent every time: kadm's metadata
// helpers may answer from the client's cache.
func (r *run) probeSource(ctx context.Context) error {
	req := kmsg.NewPtrMetadataRequest()
	req.Topics = []kmsg.MetadataRequestTopic{}
	if _, err := req.RequestWith(ctx, r.src); err != nil {
		return fmt.Errorf("source %q did not answer a metadata request: %w", r.cfg.Source, err)
	}
	return nil
}

// heartbeatClient builds a client of cluster c, retrying while it cannot
// (unreadable TLS files, say), or returns nil when ctx ends first.
func (r *run) heartbeatClient(ctx context.Context, c *config.Cluster, opts []kgo.Opt) *kgo.Client {
	errLog := retry.Throttle{Every: 30 * time.Second}
	for attempt := 1; ; attempt++ {
		cl, err := kafka.NewClient(c, r.logger, opts...)
		if err == nil {
			return cl
		}
		r.metrics.Errors.WithLabelValues(r.cfg.Name, metrics.ErrHeartbeat).Inc()
		if errLog.Allow() {
			r.logger.Error("cannot set up heartbeats; replication goes on, retrying", "cluster", c.Alias, "err", err)
		}
		if !retry.Sleep(ctx, retry.Backoff{Base: time.Second, Max: 30 * time.Second}.Delay(attempt)) {
			return nil
		}
	}
}
