// Package server is kmirror's admin HTTP endpoint: Prometheus metrics,
// health, readiness, a JSON view of the flows and a dashboard page over
// it. It reads the flows' state and never changes it.
//
// The server is hardened for a hostile network: every request but
// /healthz and /readyz needs the configured bearer token or basic-auth
// credentials (compared in constant time); reads, writes and idle
// keep-alive connections have timeouts; headers are size-limited; and the
// number of open connections is capped. It can serve HTTPS with a
// certificate that is read again when its files change.
package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/flow"
	"github.com/kmirror/kmirror/internal/metrics"
)

// Server serves the admin HTTP endpoints.
type Server struct {
	flows   []*flow.Flow
	metrics *metrics.Metrics
	logger  *slog.Logger
	version string
	cfg     config.HTTP // AuthToken and BasicAuth are cleared: creds holds their digests
	creds   *credentials
	certs   *certFiles // nil: plain HTTP

	refused      refusals
	unauthorized prometheus.Counter
	open         prometheus.Gauge
	capReached   prometheus.Counter
}

// New returns a server over flows configured by h, and registers its
// metrics with m. With TLS configured it loads the certificate, so that
// a bad pair is reported before anything starts.
func New(flows []*flow.Flow, m *metrics.Metrics, version string, h config.HTTP, logger *slog.Logger) (*Server, error) {
	s := &Server{flows: flows, metrics: m, logger: logger, version: version, creds: newCredentials(h)}
	h.AuthToken, h.BasicAuth = "", nil
	s.cfg = withDefaults(h)
	if h.TLS != nil {
		certs, err := loadCertFiles(h.TLS.CertFile, h.TLS.KeyFile, logger)
		if err != nil {
			return nil, err
		}
		s.certs = certs
	}
	s.unauthorized = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kmirror_http_unauthorized_requests_total",
		Help: "Admin HTTP requests refused with 401: no or wrong credentials.",
	})
	s.open = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kmirror_http_connections",
		Help: "Admin HTTP connections open.",
	})
	s.capReached = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kmirror_http_connection_limit_reached_total",
		Help: "Times the admin HTTP server had max_connections open and a new connection had to wait.",
	})
	for _, c := range []prometheus.Collector{s.unauthorized, s.open, s.capReached} {
		if err := m.Registry.Register(c); err != nil {
			return nil, fmt.Errorf("admin HTTP metrics: %w", err)
		}
	}
	return s, nil
}

// withDefaults fills the limits left zero (by a caller that did not go
// through config.Parse) with their defaults: a zero timeout would mean none.
func withDefaults(h config.HTTP) config.HTTP {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&h.ReadHeaderTimeout, config.DefaultHTTPReadHeaderTimeout)
	def(&h.ReadTimeout, config.DefaultHTTPReadTimeout)
	def(&h.WriteTimeout, config.DefaultHTTPWriteTimeout)
	def(&h.IdleTimeout, config.DefaultHTTPIdleTimeout)
	if h.MaxHeaderBytes <= 0 {
		h.MaxHeaderBytes = config.DefaultHTTPMaxHeaderBytes
	}
	if h.MaxConnections <= 0 {
		h.MaxConnections = config.DefaultHTTPMaxConnections
	}
	return h
}

// Listen binds the configured address, so that a port in use is reported
// before any flow starts. It warns when the server is reachable from other
// hosts without credentials, or with credentials sent in clear.
func (s *Server) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("http.listen %q: %w", s.cfg.Listen, err)
	}
	if !loopback(s.cfg.Listen) {
		switch {
		case !s.creds.required():
			s.logger.Warn("admin HTTP: reachable from other hosts without credentials; set http.auth_token or http.basic_auth, or listen on 127.0.0.1",
				"listen", s.cfg.Listen)
		case s.certs == nil:
			s.logger.Warn("admin HTTP: reachable from other hosts over plain HTTP: credentials cross the network in clear; set http.tls",
				"listen", s.cfg.Listen)
		}
	}
	return newLimitListener(ln, s.cfg.MaxConnections, s.open, s.capReached), nil
}

// loopback reports whether listen address addr accepts only local
// connections.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Handler returns the HTTP routes, behind the credentials check.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /api/flows", s.apiFlows)
	mux.HandleFunc("GET /{$}", s.dashboard("index.html", "text/html; charset=utf-8"))
	mux.HandleFunc("GET /dashboard.js", s.dashboard("dashboard.js", "text/javascript; charset=utf-8"))
	mux.HandleFunc("GET /dashboard.css", s.dashboard("dashboard.css", "text/css; charset=utf-8"))
	return s.authenticate(mux)
}

// authenticate answers 401, with a WWW-Authenticate challenge, to requests
// without the configured credentials, except for the public paths.
func (s *Server) authenticate(next http.Handler) http.Handler {
	if !s.creds.required() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if public(r.URL.Path) || s.creds.ok(r) {
			next.ServeHTTP(w, r)
			return
		}
		s.unauthorized.Inc()
		if n := s.refused.add(time.Now()); n > 0 {
			s.logger.Warn("admin HTTP: refused requests without valid credentials (logged at most once a minute)",
				"refused", n, "remote", r.RemoteAddr, "path", r.URL.Path)
		}
		w.Header().Set("WWW-Authenticate", s.creds.challenge)
		msg := "unauthorized: this path needs the credentials set in http.auth_token or http.basic_auth"
		if r.URL.Path == "/" && s.creds.scheme == "Bearer" {
			// A browser cannot send a bearer token of its own accord.
			msg += "\nThe dashboard needs them too: a browser asks for http.basic_auth credentials, but cannot send the http.auth_token bearer token itself; use basic auth, or a proxy that adds the Authorization header."
		}
		http.Error(w, msg, http.StatusUnauthorized)
	})
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
	if st.SourceError != "" || st.TargetError != "" {
		reason := fmt.Sprintf("flow %s: source_up=%t target_up=%t", st.Name, st.SourceUp, st.TargetUp)
		if st.SourceError != "" {
			reason += "; source: " + st.SourceError
		}
		if st.TargetError != "" {
			reason += "; target: " + st.TargetError
		}
		return reason
	}
	if o := st.Owner; o != nil && !o.Holding {
		holder := "no instance yet"
		if o.Holder != nil {
			holder = o.Holder.String()
		}
		return fmt.Sprintf("flow %s: waiting; another instance holds the flow (%s)", st.Name, holder)
	}
	return fmt.Sprintf("flow %s: source_up=%t target_up=%t", st.Name, st.SourceUp, st.TargetUp)
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

// Serve serves on ln, a listener from Listen, until ctx is done.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		// Handshake failures and bad requests from scanners are not worth
		// more than a debug line each.
		ErrorLog: slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug),
	}
	if s.certs != nil {
		ln = tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.certs.get})
	}
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
