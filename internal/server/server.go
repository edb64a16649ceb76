// Package server is kmirror's HTTP endpoint: Prometheus metrics, health,
// readiness and a JSON view of the flows. It reads the flows' state and
// never changes it.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kmirror/kmirror/internal/flow"
	"github.com/kmirror/kmirror/internal/metrics"
)

// Server serves the admin HTTP endpoints.
type Server struct {
	flows   []*flow.Flow
	metrics *metrics.Metrics
	logger  *slog.Logger
	version string
}

// New returns a server over flows.
func New(flows []*flow.Flow, m *metrics.Metrics, version string, logger *slog.Logger) *Server {
	return &Server{flows: flows, metrics: m, logger: logger, version: version}
}

// Handler returns the HTTP routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /api/flows", s.apiFlows)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "kmirror %s\n\n/metrics    Prometheus metrics\n/healthz    liveness\n/readyz     readiness (every flow reaches both clusters); lists stuck topics\n/api/flows  flow status as JSON\n", s.version)
	})
	return mux
}

// readyz answers 503 while a flow cannot replicate at all (not started, a
// cluster unreachable), and 200 otherwise. Topics a flow replicates only in
// part (see flow.Stuck) are listed in the body either way but do not make
// it unready: restarting kmirror would not help them and would stop the
// other topics.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	var notReady, stuck []string
	for _, f := range s.flows {
		if !f.Ready() {
			notReady = append(notReady, notReadyReason(f.Status()))
		}
		for _, st := range f.StuckTopics() {
			parts := "all partitions"
			if len(st.Partitions) > 0 {
				parts = fmt.Sprintf("partitions %v", st.Partitions)
			}
			stuck = append(stuck, fmt.Sprintf("flow %s: topic %s, %s: %s", f.Name(), st.Topic, parts, st.Reason))
		}
	}
	if len(notReady) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		for _, l := range notReady {
			fmt.Fprintln(w, "not ready:", l)
		}
	} else {
		fmt.Fprintln(w, "ready")
	}
	for _, l := range stuck {
		fmt.Fprintln(w, "stuck:", l)
	}
}

// notReadyReason says why a flow is not ready, in one line.
func notReadyReason(st flow.Status) string {
	if o := st.Owner; o != nil && !o.Holding {
		holder := "no instance yet"
		if o.Holder != nil {
			holder = o.Holder.String()
		}
		return fmt.Sprintf("flow %s: waiting; another instance holds the flow (%s)", st.Name, holder)
	}
	reason := fmt.Sprintf("flow %s: source_up=%t target_up=%t", st.Name, st.SourceUp, st.TargetUp)
	if st.SourceError != "" {
		reason += "; source: " + st.SourceError
	}
	if st.TargetError != "" {
		reason += "; target: " + st.TargetError
	}
	return reason
}

func (s *Server) apiFlows(w http.ResponseWriter, _ *http.Request) {
	out := make([]flow.Status, len(s.flows))
	for i, f := range s.flows {
		out[i] = f.Status()
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}

// Listen binds addr, so a port in use is reported before any flow starts.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http.listen %q: %w", addr, err)
	}
	return ln, nil
}

// Serve serves on ln until ctx is done.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
		shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http server shutdown: %w", err)
		}
		return nil
	}
}
