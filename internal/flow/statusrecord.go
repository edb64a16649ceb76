package flow

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/ownership"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/retry"
	"github.com/kmirror/kmirror/internal/status"
)

// statusTimeout bounds the gathering and the writing of one status
// record.
const statusTimeout = status.Interval

// publishStatus stores a summary of the flow in its state topics every
// few seconds, for kmirror status run elsewhere, until ctx ends.
//
// The record (status.Record, key "status") goes to the compacted topic
// policy.StatusTopic on the target, through the bookkeeping producer,
// which writes only under the lease, so that only the instance holding
// the flow writes it (not the data plane's: an exactly-once flow's is
// transactional). A record that cannot
// be written is counted as kind progress, logged once per 30 s and
// written again at the next interval.
func (r *run) publishStatus(ctx context.Context) {
	p := &statusPublisher{
		run:     r,
		topic:   policy.StatusTopic(r.cfg.Name),
		started: time.Now(),
		latency: status.LatencyWindow{Span: time.Minute},
		errs:    newLastErrors(r.Flow),
		owner:   ownership.Self(r.created).Instance,
	}
	p.latency.Add(p.started, r.latencyHistogram())
	errLog := retry.Throttle{Every: 30 * time.Second}
	failing := false
	t := time.NewTicker(status.Interval)
	defer t.Stop()
	for {
		err := p.publish(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			failing = true
			r.metrics.Errors.WithLabelValues(r.cfg.Name, metrics.ErrProgress).Inc()
			if errLog.Allow() {
				r.logger.Error("cannot store the flow's status on the target; retrying", "topic", p.topic, "err", err)
			}
		case failing:
			failing = false
			r.logger.Info("flow status stored on the target again", "topic", p.topic)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// statusPublisher is the state of publishStatus.
type statusPublisher struct {
	*run
	topic   string
	started time.Time
	owner   string
	ensured bool
	latency status.LatencyWindow
	errs    *lastErrors
}

// publish gathers and writes one status record.
func (p *statusPublisher) publish(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	if !p.ensured {
		err := kafka.EnsureCompactedTopic(ctx, p.tgtAdmin, p.topic, p.cfg.ReplicationFactor, nil)
		if errors.Is(err, kafka.ErrStateTopicShape) {
			// Only the newest record matters: a topic that retention
			// empties still serves; say so once.
			p.logger.Warn("the flow's status topic is not compacted alone; kmirror status may find it empty", "err", err)
		} else if err != nil {
			return p.access().Name(err)
		}
		p.ensured = true
	}
	rec := p.gather(ctx, time.Now())
	kr, err := status.Encode(p.topic, rec)
	if err != nil {
		return err
	}
	if err := p.meta.ProduceSync(ctx, kr).FirstErr(); err != nil {
		return p.access().Denied(kafka.OpWrite, kafka.ResTopic, p.topic, err)
	}
	return nil
}

func (p *statusPublisher) access() kafka.Access { return kafka.AccessOf(p.target) }

// gather builds the status record of the flow as it stands at now.
func (p *statusPublisher) gather(ctx context.Context, now time.Time) status.Record {
	rec := status.Record{
		Flow: p.cfg.Name, Source: p.cfg.Source, Target: p.cfg.Target,
		State: status.StateRunning, Owner: p.owner,
		StartedMs: p.started.UnixMilli(), UpdatedMs: now.UnixMilli(), IntervalMs: status.Interval.Milliseconds(),
		SourceUp: p.sourceUp.Load(), TargetUp: p.targetUp.Load(),
	}
	if st := p.Flow.owner.Load(); st != nil {
		for _, m := range st.Members {
			rec.Instances = append(rec.Instances, status.Instance{
				Instance: m.Instance, Partitions: len(m.Partitions),
				Elected: st.Holder != nil && st.Holder.Instance == m.Instance,
			})
		}
	}
	if t := p.topics.Load(); t != nil {
		rec.Topics = len(*t)
		for _, topic := range *t {
			rec.Partitions += int(topic.Partitions)
		}
	}
	p.lag(ctx, &rec, now)
	p.recoveryPoint(&rec, now)
	p.latency.Add(now, p.latencyHistogram())
	if v, ok := p.latency.Quantile(0.50); ok {
		rec.LatencyP50Ms = &v
	}
	if v, ok := p.latency.Quantile(0.99); ok {
		rec.LatencyP99Ms = &v
	}
	if p.cfg.HeartbeatInterval > 0 {
		rec.Heartbeat = &status.RecordHeartbeat{}
		age, seenAge := p.gauge(p.metrics.HeartbeatAge)
		lat, seen := p.gauge(p.metrics.HeartbeatLatency)
		if seen && seenAge {
			rec.Heartbeat.LastMs = now.Add(-time.Duration(age * float64(time.Second))).UnixMilli()
			rec.Heartbeat.LatencyMs = lat * 1000
		}
	}
	rec.LastError = p.errs.update(p.Flow, now)
	if p.cfg.SyncGroupOffsets {
		youngest := math.Inf(1)
		for _, m := range flowSeries(p.metrics.CheckpointAge, p.cfg.Name) {
			youngest = min(youngest, m.GetGauge().GetValue())
		}
		if !math.IsInf(youngest, 1) {
			rec.GroupSyncAgeSeconds = &youngest
		}
	}
	return rec
}

// lag sets the records not yet copied, from the flow's positions and the
// source end offsets now (the heartbeat topic's excepted: its freshness
// is the heartbeat age), and the age of the oldest of them, read from the
// source. It leaves them unknown (null) when they cannot be read.
func (p *statusPublisher) lag(ctx context.Context, rec *status.Record, now time.Time) {
	parts, err := p.Lag(ctx)
	if err != nil {
		return
	}
	heartbeats := p.naming.HeartbeatTopic()
	var total int64
	pending := map[string]map[int32]int64{}
	for _, pl := range parts {
		if (heartbeats != "" && pl.Topic == heartbeats) || pl.Lag <= 0 {
			continue
		}
		total += pl.Lag
		if pending[pl.Topic] == nil {
			pending[pl.Topic] = map[int32]int64{}
		}
		pending[pl.Topic][pl.Partition] = max(pl.SourceNext, 0)
	}
	rec.LagRecords = &total
	secs := 0.0
	if total > 0 {
		oldest, ok, _ := status.OldestPending(ctx, p.src, pending)
		if !ok {
			return
		}
		secs = max(now.Sub(oldest), 0).Seconds()
	}
	rec.LagSeconds = &secs
}

// latencyHistogram returns the flow's kmirror_replication_latency_seconds.
func (r *run) latencyHistogram() *dto.Histogram {
	var d dto.Metric
	if m, ok := r.metrics.Latency.WithLabelValues(r.cfg.Name).(prometheus.Metric); ok && m.Write(&d) == nil {
		return d.GetHistogram()
	}
	return &dto.Histogram{}
}

// gauge returns the flow's value of a gauge, and false if it has none.
func (r *run) gauge(g *prometheus.GaugeVec) (float64, bool) {
	s := flowSeries(g, r.cfg.Name)
	if len(s) == 0 {
		return 0, false
	}
	return s[0].GetGauge().GetValue(), true
}
