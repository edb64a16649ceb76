// Package runner starts everything a configuration asks for: its flows,
// the metrics they share and the admin HTTP server. `kmirror run` and
// `kmirror demo` both go through it, so the demo exercises the same path.
package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kmirror/kmirror/internal/buildinfo"
	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/flow"
	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/membudget"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/server"
)

// Runner runs the flows of one configuration.
type Runner struct {
	Flows   []*flow.Flow
	Metrics *metrics.Metrics

	cfg    *config.Config
	logger *slog.Logger
	server *server.Server
	ln     net.Listener
}

// New builds the flows of cfg and binds the HTTP listener (unless
// disabled), so that a port in use is reported before anything starts.
func New(cfg *config.Config, version string, logger *slog.Logger) (*Runner, error) {
	r := &Runner{Metrics: metrics.New(), cfg: cfg, logger: logger}
	bi := buildinfo.Read(version, "")
	r.Metrics.SetBuildInfo(bi.Version(), bi.Commit(), bi.GoVersion())
	for _, fc := range cfg.Flows {
		r.Metrics.InitFlow(fc.Name)
		r.Flows = append(r.Flows, flow.New(cfg, fc, r.Metrics, logger))
	}
	flow.Siblings(r.Flows)
	if cfg.HTTP.Listen != "off" {
		srv, err := server.New(r.Flows, r.Metrics, version, cfg.HTTP, logger)
		if err != nil {
			return nil, err
		}
		ln, err := srv.Listen()
		if err != nil {
			return nil, err
		}
		r.server, r.ln = srv, ln
	}
	return r, nil
}

// SetMemory gives each flow its part of the memory budget p, split from
// the runner's configuration (membudget.Split). It is called before Run;
// without it, the flows use their configured sizes.
func (r *Runner) SetMemory(p membudget.Plan) {
	for i, f := range r.Flows {
		if i < len(p.Flows) {
			f.SetMemory(p.Flows[i])
		}
	}
}

// HTTPAddr is the address the admin server listens on, or "" if disabled.
func (r *Runner) HTTPAddr() string {
	if r.ln == nil {
		return ""
	}
	return r.ln.Addr().String()
}

// Check verifies that every flow reaches both of its clusters.
func (r *Runner) Check(ctx context.Context) error {
	var errs []error
	for _, f := range r.Flows {
		errs = append(errs, f.Check(ctx))
	}
	return errors.Join(errs...)
}

// PendingFailover is a failover recorded for a flow and not failed back:
// clients were moved to the flow's target, and running the flow again
// would copy its source over what they wrote there since.
type PendingFailover struct {
	Flow    string
	Source  string
	Target  string
	At      time.Time
	Planned bool
}

// PendingFailovers reads every flow's progress topic and returns the
// flows with a failover recorded and not failed back.
func (r *Runner) PendingFailovers(ctx context.Context) ([]PendingFailover, error) {
	var out []PendingFailover
	for _, f := range r.Flows {
		fc := f.Config()
		p, err := pendingFailover(ctx, r.cfg.Clusters[fc.Target], fc, r.logger)
		if err != nil {
			return nil, fmt.Errorf("flow %q: reading its failover record: %w", fc.Name, err)
		}
		if p != nil {
			out = append(out, *p)
		}
	}
	return out, nil
}

func pendingFailover(ctx context.Context, tc *config.Cluster, fc *config.Flow, logger *slog.Logger) (*PendingFailover, error) {
	cl, err := kafka.NewClient(tc, logger)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	topic := policy.ProgressTopic(fc.Name)
	td, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err != nil {
		return nil, err
	}
	if d, ok := td[topic]; !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
		return nil, nil // the flow never ran
	} else if d.Err != nil {
		return nil, d.Err
	}
	loaded, err := progress.NewStore(cl, topic).Load(ctx)
	if err != nil {
		return nil, err
	}
	if loaded.Failover == nil {
		return nil, nil
	}
	return &PendingFailover{Flow: fc.Name, Source: fc.Source, Target: fc.Target,
		At: time.UnixMilli(loaded.Failover.AtMs), Planned: loaded.Failover.Planned}, nil
}

// SetBuildInfo sets kmirror_build_info to the running build, when the
// caller knows more of it than New (the commit set at link time).
func (r *Runner) SetBuildInfo(bi buildinfo.Info) {
	r.Metrics.SetBuildInfo(bi.Version(), bi.Commit(), bi.GoVersion())
}

// RecoveryInterval is how often the kmirror_recovery_point_* gauges are
// brought up to date.
const RecoveryInterval = 2 * time.Second

// recoveryGauges keeps the recovery point gauges of the flows up to date
// until ctx ends.
func (r *Runner) recoveryGauges(ctx context.Context) {
	g := flow.NewRecoveryGauges(r.Metrics)
	t := time.NewTicker(RecoveryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			g.Update(r.Flows, now)
		}
	}
}

// Close releases the HTTP listener of a runner that was never run.
func (r *Runner) Close() {
	if r.ln != nil {
		r.ln.Close()
	}
}

// Run runs every flow and the HTTP server until ctx is done, then waits
// for the flows to store their progress.
func (r *Runner) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(r.Flows)+1)
	if r.server != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.server.Serve(ctx, r.ln); err != nil {
				errc <- err
				cancel()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.recoveryGauges(ctx)
	}()
	for _, f := range r.Flows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.Run(ctx); err != nil {
				errc <- err
				cancel()
			}
		}()
	}
	wg.Wait()
	close(errc)
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
