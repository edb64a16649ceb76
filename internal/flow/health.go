package flow

import (
	"context"
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
	check := func(cl *kgo.Client, c *config.Cluster, up *atomic.Bool) {
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
			f.metrics.Errors.WithLabelValues(f.cfg.Name, metrics.ErrUnreachable).Inc()
			if was {
				f.logger.Error("cluster unreachable; retrying", "cluster", c.Alias, "err", err)
			}
			return
		}
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
		check(src, f.source, &f.sourceUp)
		check(tgt, f.target, &f.targetUp)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
