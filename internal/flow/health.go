package flow

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/metrics"
)

// healthInterval is how often both clusters are pinged for readiness.
const healthInterval = 3 * time.Second

// watchHealth pings both clusters periodically and keeps the up flags and
// gauges current; a cluster going down or coming back is logged once.
func (f *Flow) watchHealth(ctx context.Context, src, tgt *kgo.Client) {
	check := func(cl *kgo.Client, c *config.Cluster, up *atomic.Bool, why *atomic.Pointer[string]) {
		pingCtx, cancel := context.WithTimeout(ctx, min(c.DialTimeout, healthInterval))
		err := kafka.Ping(pingCtx, cl, c)
		cancel()
		if ctx.Err() != nil {
			return
		}
		was := up.Swap(err == nil)
		g := f.metrics.ClusterUp.WithLabelValues(f.cfg.Name, c.Alias)
		if err != nil {
			g.Set(0)
			kind, msg := metrics.ErrUnreachable, err.Error()
			var ce *kafka.ClusterError
			if errors.As(err, &ce) {
				kind = ce.Kind
			}
			f.metrics.Errors.WithLabelValues(f.cfg.Name, kind).Inc()
			// One line when the cluster goes down, and again only
			// when the kind of failure changes (say, from a refused
			// password to no answer), not at every new error text.
			if prev := why.Swap(&msg); was || prev == nil || f.lastKind(c.Alias) != kind {
				f.logger.Error(healthMessage(kind), "cluster", c.Alias, "kind", kind, "err", err)
			}
			f.healthKind.Store(c.Alias, kind)
			return
		}
		why.Store(nil)
		g.Set(1)
		if !was {
			f.logger.Info("cluster reachable", "cluster", c.Alias)
		}
	}
	// Assume reachable at start (Check ran); the first pass corrects it.
	f.sourceUp.Store(true)
	f.targetUp.Store(true)
	t := time.NewTicker(healthInterval)
	defer t.Stop()
	for {
		check(src, f.source, &f.sourceUp, &f.sourceErr)
		check(tgt, f.target, &f.targetUp, &f.targetErr)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// lastKind is the kind of the last failed health check of cluster alias.
func (f *Flow) lastKind(alias string) string {
	if k, ok := f.healthKind.Load(alias); ok {
		return k.(string)
	}
	return ""
}

// healthMessage is the log message of a failed health check of kind.
func healthMessage(kind string) string {
	switch kind {
	case metrics.ErrAuthentication:
		return "cluster refused authentication; retrying"
	case metrics.ErrTLS:
		return "TLS with cluster failed; retrying"
	case metrics.ErrAuthorization:
		return "cluster refused an operation (missing ACL); retrying"
	default:
		return "cluster unreachable; retrying"
	}
}
