package flow

import (
	"context"
	"log/slog"
	"time"

	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/retry"
	"github.com/kmirror/kmirror/internal/verify"
	"github.com/kmirror/kmirror/internal/verify/flowverify"
)

const (
	// verifyMaxRecords bounds the source offsets one audit compares per
	// partition: the newest ones of the range since the previous audit.
	verifyMaxRecords = 10_000
	// verifyParallel is how many partitions an audit compares at once,
	// kept low beside the data plane.
	verifyParallel = 2
	// verifyLogEvery throttles the ERROR line of a partition that keeps
	// differing; the metrics count every difference.
	verifyLogEvery = 15 * time.Minute
)

// auditor is continuous verification (verify_interval): every interval
// it compares, partition by partition, the records the flow replicated
// since its previous audit with their source, through the stored offset
// map (package flowverify). It only reads.
type auditor struct {
	flow    string
	env     flowverify.Env
	metrics *metrics.Metrics
	logger  *slog.Logger
	// from is, by partition, the source offset the previous audit
	// ended at: where the next one starts.
	from map[progress.Partition]flowverify.Start
	// logs throttles the ERROR line of each partition.
	logs    map[progress.Partition]*retry.Throttle
	errLog  retry.Throttle
	maxRecs int64
}

func (r *run) newAuditor(env flowverify.Env) *auditor {
	a := &auditor{
		flow: r.cfg.Name, env: env, metrics: r.metrics, logger: r.logger,
		from: map[progress.Partition]flowverify.Start{}, logs: map[progress.Partition]*retry.Throttle{},
		errLog: retry.Throttle{Every: verifyLogEvery}, maxRecs: verifyMaxRecords,
	}
	for _, kind := range metrics.VerifyKinds() {
		a.metrics.VerifyMismatches.WithLabelValues(a.flow, kind).Add(0)
	}
	a.metrics.VerifyRuns.WithLabelValues(a.flow).Add(0)
	a.metrics.VerifyRecords.WithLabelValues(a.flow).Add(0)
	return a
}

// verifyLoop audits the flow every verify interval until ctx ends.
func (r *run) verifyLoop(ctx context.Context) {
	src, err := kafka.NewClient(r.source, r.logger)
	if err != nil {
		r.logger.Error("continuous verification not started", "cluster", r.cfg.Source, "err", err)
		return
	}
	defer src.Close()
	dst, err := kafka.NewClient(r.target, r.logger)
	if err != nil {
		r.logger.Error("continuous verification not started", "cluster", r.cfg.Target, "err", err)
		return
	}
	defer dst.Close()
	a := r.newAuditor(flowverify.Env{Flow: r.cfg, Clusters: r.peers, Graph: r.graph, Source: src, Target: dst})
	for retry.Sleep(ctx, r.cfg.VerifyInterval) {
		_, _ = a.audit(ctx) // counted and logged by audit
	}
}

// audit compares, for each replicated partition, the source offsets
// between where the previous audit ended and the stored position (at most
// the newest maxRecs), and counts what it finds. A failed audit is
// logged (throttled) and counted; the next one covers its range again.
func (a *auditor) audit(ctx context.Context) (*flowverify.FlowReport, error) {
	rep, err := flowverify.Audit(ctx, a.env, flowverify.Options{
		From: a.from, MaxRecords: a.maxRecs, NoTopicOK: true,
		Parallel: verifyParallel, Logger: a.logger,
	})
	if err != nil {
		if ctx.Err() == nil {
			a.metrics.Errors.WithLabelValues(a.flow, metrics.ErrOther).Inc()
			if a.errLog.Allow() {
				a.logger.Warn("continuous verification: audit failed; retrying at the next interval", "err", err)
			}
		}
		return nil, err
	}
	from := make(map[progress.Partition]flowverify.Start, len(a.from))
	for _, t := range rep.Topics {
		for _, p := range t.Details {
			id := progress.Partition{Topic: t.Topic, Partition: p.Partition}
			start := flowverify.Start{Source: p.SourceEnd, Target: p.TargetEnd}
			if t.Note != "" {
				start.Target = -1 // no target topic: nothing read there
			}
			from[id] = start
			if p.Counts.Differences() > 0 {
				a.report(id, t.TargetTopic, p)
			}
		}
	}
	a.from = from
	c := rep.Totals
	a.metrics.VerifyRecords.WithLabelValues(a.flow).Add(float64(c.SourceRecords))
	a.metrics.VerifyMismatches.WithLabelValues(a.flow, verify.KindMissing).Add(float64(c.Missing))
	a.metrics.VerifyMismatches.WithLabelValues(a.flow, verify.KindAltered).Add(float64(c.Altered))
	a.metrics.VerifyMismatches.WithLabelValues(a.flow, verify.KindDuplicated).Add(float64(c.Duplicated))
	a.metrics.VerifyMismatches.WithLabelValues(a.flow, verify.KindExtra).Add(float64(c.Extra - c.Duplicated))
	a.metrics.VerifyRuns.WithLabelValues(a.flow).Inc()
	a.metrics.VerifyLastSuccess.WithLabelValues(a.flow).Set(float64(time.Now().Unix()))
	a.logger.Debug("continuous verification: audit done", "compared_records", c.SourceRecords,
		"differences", c.Differences(), "elapsed_ms", rep.ElapsedMs)
	return rep, nil
}

// report logs one ERROR line for a partition that differs, naming its
// first difference, at most every verifyLogEvery per partition.
func (a *auditor) report(id progress.Partition, targetTopic string, p verify.PartitionResult) {
	th := a.logs[id]
	if th == nil {
		th = &retry.Throttle{Every: verifyLogEvery}
		a.logs[id] = th
	}
	if len(p.Differences) == 0 || !th.Allow() {
		return
	}
	d := p.Differences[0]
	a.logger.Error("continuous verification: the target copy differs from the source",
		"topic", id.Topic, "partition", id.Partition, "target_topic", targetTopic,
		"kind", d.Kind, "source_offset", d.SourceOffset, "target_offset", d.TargetOffset, "detail", d.Detail,
		"missing", p.Missing, "altered", p.Altered, "extra", p.Extra, "duplicated", p.Duplicated,
		"source_range", []int64{p.SourceStart, p.SourceEnd})
}
