package flow

import (
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/heartbeat"
	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/retry"
)

// heartbeats writes a heartbeat record to the source's heartbeat topic
// every heartbeat interval, and watches them arrive on the target, until
// ctx ends. The flow replicates the heartbeat topic like data (see
// policy.Topics.Matches), so kmirror_heartbeat_age_seconds grows as soon
// as anything on the way stops: the source, the flow, or the target.
// Faults are counted as kind heartbeat and never stop replication.
func (r *run) heartbeats(ctx context.Context) {
	name := r.cfg.Name
	defer r.metrics.HeartbeatAge.DeleteLabelValues(name)
	defer r.metrics.HeartbeatLatency.DeleteLabelValues(name)
	countError := func(error) { r.metrics.Errors.WithLabelValues(name, metrics.ErrHeartbeat).Inc() }

	writer := r.heartbeatClient(ctx, r.source, heartbeat.ProducerOpts())
	if writer == nil {
		return
	}
	defer writer.Close()
	topic := r.naming.HeartbeatTopic()
	targetTopic := r.naming.TargetName(topic)
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
			Heartbeat: heartbeat.Record{Flow: name, Source: r.cfg.Source, Target: r.cfg.Target},
			Interval:  r.cfg.HeartbeatInterval,
			Access:    kafka.AccessOf(r.source),
			OnSent:    func() { r.metrics.HeartbeatsSent.WithLabelValues(name).Inc() },
			OnError:   countError,
			Logger:    r.logger.With("cluster", r.cfg.Source),
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
