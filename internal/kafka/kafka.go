// Package kafka builds franz-go clients for the clusters named in the
// configuration. It is the one place that knows about seeds, TLS, SASL and
// timeouts, so every other package asks it for a client instead of
// assembling options itself.
package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/retry"
)

// Options returns the franz-go options that connect to cluster c: seed
// brokers, client ID, timeouts, TLS and SASL. Callers append the options of
// their role (consumer, producer).
func Options(c *config.Cluster, logger *slog.Logger) ([]kgo.Opt, error) {
	return options(c, logger, nil)
}

func options(c *config.Cluster, logger *slog.Logger, gt *gate) ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.BootstrapServers...),
		kgo.ClientID(c.ClientID),
		kgo.DialTimeout(c.DialTimeout),
		kgo.RequestTimeoutOverhead(c.RequestTimeout),
		kgo.RetryTimeout(c.RequestTimeout),
		kgo.MetadataMinAge(250 * time.Millisecond),
	}
	if logger != nil {
		opts = append(opts, kgo.WithLogger(clientLogger{l: logger.With("cluster", c.Alias), errs: &errorThrottle{seen: map[string]*retry.Throttle{}}}))
	}
	var files *tlsFiles
	if c.TLS != nil && c.TLS.Enabled {
		files = newTLSFiles(c.TLS)
		// Read the files once now, so a bad file fails the start.
		if _, err := files.config(); err != nil {
			return nil, fmt.Errorf("cluster %q: %w", c.Alias, err)
		}
	}
	if files != nil || gt != nil {
		opts = append(opts, kgo.Dialer(dialer(c.DialTimeout, files, gt)))
	}
	if c.SASL != nil {
		m, err := saslMechanism(c.SASL)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", c.Alias, err)
		}
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

// NewClient returns a client for cluster c with the extra options of its
// role appended.
func NewClient(c *config.Cluster, logger *slog.Logger, extra ...kgo.Opt) (*kgo.Client, error) {
	opts, err := Options(c, logger)
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: building client: %w", c.Alias, err)
	}
	return cl, nil
}

// NewGatedClient returns a client like NewClient whose writes to brokers
// are allowed by g: every chunk of at most 64 KiB asks g.Allow first, so
// a refused write sends nothing more, and no connection is opened while
// it refuses. When g ends (OnEnd) or refuses, every connection of the
// client is aborted with a TCP reset, so the kernel drops what it has not
// sent yet. A flow's target clients are gated by the flow's ownership
// lease, so a process that lost the flow cannot write to the target.
func NewGatedClient(c *config.Cluster, logger *slog.Logger, g Gate, extra ...kgo.Opt) (*kgo.Client, error) {
	opts, err := options(c, logger, newGate(g))
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: building client: %w", c.Alias, err)
	}
	return cl, nil
}

// dialer dials brokers, with TLS if files is set (its configuration read
// again for each connection when a file changed), over connections gated
// by gt if it is set. The gate sits under TLS, on every record sent, and
// aborts the TCP connection itself.
func dialer(timeout time.Duration, files *tlsFiles, gt *gate) func(context.Context, string, string) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	return func(ctx context.Context, network, host string) (net.Conn, error) {
		if gt != nil {
			if err := gt.allow(); err != nil {
				return nil, err
			}
		}
		var tc *tls.Config
		if files != nil {
			var err error
			if tc, err = files.config(); err != nil {
				return nil, err
			}
		}
		raw, err := d.DialContext(ctx, network, host)
		if err != nil {
			return nil, err
		}
		conn := raw
		if gt != nil {
			gc := &gatedConn{Conn: raw, gate: gt}
			if !gt.add(gc) {
				if err := gt.g.Allow(); err != nil {
					return nil, err
				}
				return nil, net.ErrClosed
			}
			conn = gc
		}
		if tc == nil {
			return conn, nil
		}
		cfg := tc.Clone()
		if cfg.ServerName == "" {
			if h, _, err := net.SplitHostPort(host); err == nil {
				cfg.ServerName = h
			}
		}
		tconn := tls.Client(conn, cfg)
		if err := tconn.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, err
		}
		return tconn, nil
	}
}

// Ping checks that at least one broker of the cluster answers within the
// context's deadline, and names the cluster and its seeds when none does.
// Its error is a *ClusterError saying what failed: authentication, TLS,
// authorization, or no answer.
func Ping(ctx context.Context, cl *kgo.Client, c *config.Cluster) error {
	// The client does not give up a connection attempt to a broker that
	// accepts but never answers when ctx ends, only at its own request
	// timeout; wait for ctx alone.
	done := make(chan error, 1)
	go func() { done <- cl.Ping(ctx) }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = fmt.Errorf("no answer before the deadline: %w", ctx.Err())
	}
	if err == nil {
		return nil
	}
	ce := clusterError(c, err)
	var ne net.Error
	if ce.Kind == metrics.ErrUnreachable && (errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded)) {
		ce.Reason = "no broker answered: " + ce.Reason
		ce.msg = fmt.Sprintf("cluster %q (%s) unreachable: %s", c.Alias, strings.Join(c.BootstrapServers, ","), ce.Reason)
	}
	return ce
}

func saslMechanism(s *config.SASL) (sasl.Mechanism, error) {
	switch s.Mechanism {
	case "PLAIN":
		return plain.Auth{User: s.Username, Pass: s.Password}.AsMechanism(), nil
	case "SCRAM-SHA-256":
		return scram.Auth{User: s.Username, Pass: s.Password}.AsSha256Mechanism(), nil
	case "SCRAM-SHA-512":
		return scram.Auth{User: s.Username, Pass: s.Password}.AsSha512Mechanism(), nil
	case config.MechanismOAuthBearer:
		return oauthMechanism(s.OAuth)
	case config.MechanismAWSMSKIAM:
		return mskMechanism(context.Background(), s)
	default:
		return nil, fmt.Errorf("sasl.mechanism %q is not supported; expected PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM", s.Mechanism)
	}
}

// clientLogger passes franz-go's own log lines to slog. franz-go logs every
// retry; kmirror reports faults itself, once, so only franz-go's errors
// pass unless debug logging is on, each message at most once per
// clientErrorEvery: a broker that is down makes franz-go log an error on
// every connection attempt.
type clientLogger struct {
	l    *slog.Logger
	errs *errorThrottle
}

// clientErrorEvery is how often one franz-go error message may be logged.
const clientErrorEvery = time.Minute

// errorThrottle lets each franz-go error message through once per
// clientErrorEvery; franz-go's messages are a small fixed set.
type errorThrottle struct {
	mu   sync.Mutex
	seen map[string]*retry.Throttle
}

func (e *errorThrottle) allow(msg string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	th, ok := e.seen[msg]
	if !ok {
		th = &retry.Throttle{Every: clientErrorEvery}
		e.seen[msg] = th
	}
	return th.Allow()
}

func (c clientLogger) Level() kgo.LogLevel {
	if c.l.Enabled(context.Background(), slog.LevelDebug) {
		return kgo.LogLevelDebug
	}
	return kgo.LogLevelError
}

func (c clientLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	sl := slog.LevelDebug
	switch level {
	case kgo.LogLevelError:
		sl = slog.LevelError
	case kgo.LogLevelWarn:
		sl = slog.LevelWarn
	case kgo.LogLevelInfo:
		sl = slog.LevelInfo
	}
	if strings.HasPrefix(msg, "batch decompresses larger than MaxDecompressBatchBytes") {
		// The data plane reports it in its own words, once (see
		// replicate's batchTooLarge); the client's advice to skip the
		// batch is not kmirror's.
		sl = slog.LevelDebug
	}
	if sl == slog.LevelError && c.errs != nil && !c.l.Enabled(context.Background(), slog.LevelDebug) && !c.errs.allow(msg) {
		return
	}
	c.l.Log(context.Background(), sl, "kafka client: "+msg, keyvals...)
}

// StateTopicConfigs are the configs kmirror creates its state topics
// with. Compaction keeps the newest record of every key forever; small
// segments that roll at least hourly and a low dirty ratio let the
// cleaner keep the topic small, so a start-up reads megabytes, not the
// gigabyte of a default segment.
var StateTopicConfigs = map[string]string{
	"cleanup.policy":            "compact",
	"segment.bytes":             "33554432", // 32 MiB
	"segment.ms":                "3600000",  // 1 h
	"min.cleanable.dirty.ratio": "0.1",
}

// ErrStateTopicShape is wrapped by the error of a state topic whose
// configuration would lose kmirror's state. It is not transient: the
// topic must be changed (or deleted) by an operator.
var ErrStateTopicShape = errors.New("state topic configuration would lose kmirror's state")

// EnsureCompactedTopic creates topic with one partition and
// StateTopicConfigs, plus extra configs, unless it exists. An existing
// topic is checked: its cleanup.policy must be compact alone, since a
// delete policy (alone or with compact) lets retention remove the state
// kmirror keeps there; any other value is an error wrapping
// ErrStateTopicShape that names the topic, the config, the value found
// and expected, and how to fix it. replicationFactor <= 0 means the
// cluster's default. kmirror keeps its own state in such topics.
func EnsureCompactedTopic(ctx context.Context, adm *kadm.Client, topic string, replicationFactor int, extra map[string]string) error {
	rf := int16(replicationFactor)
	if rf <= 0 {
		rf = -1
	}
	configs := map[string]*string{}
	for k, v := range StateTopicConfigs {
		configs[k] = kadm.StringPtr(v)
	}
	for k, v := range extra {
		configs[k] = kadm.StringPtr(v)
	}
	resp, err := adm.CreateTopic(ctx, 1, rf, configs, topic)
	if err == nil {
		return nil
	}
	if errors.Is(err, kerr.TopicAlreadyExists) {
		return CheckStateTopic(ctx, adm, topic)
	}
	msg := ""
	if resp.ErrMessage != "" {
		msg = " (" + resp.ErrMessage + ")"
	}
	return fmt.Errorf("creating topic %q: %w%s", topic, Denied(OpCreate, ResTopic, topic, err), msg)
}

// CheckStateTopic returns an error wrapping ErrStateTopicShape if the
// existing topic's cleanup.policy is not compact alone.
func CheckStateTopic(ctx context.Context, adm *kadm.Client, topic string) error {
	described, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return fmt.Errorf("describing the configs of topic %q: %w", topic, Denied(OpDescribeConfigs, ResTopic, topic, err))
	}
	rc, err := described.On(topic, nil)
	if err != nil {
		return fmt.Errorf("describing the configs of topic %q: %w", topic, err)
	}
	if rc.Err != nil {
		return fmt.Errorf("describing the configs of topic %q: %w", topic, Denied(OpDescribeConfigs, ResTopic, topic, rc.Err))
	}
	policy := "delete" // Kafka's default when the topic's config is not returned
	for _, c := range rc.Configs {
		if c.Key == "cleanup.policy" {
			policy = c.MaybeValue()
		}
	}
	if compactOnly(policy) {
		return nil
	}
	return fmt.Errorf("topic %q: cleanup.policy is %q, expected \"compact\": retention would delete the state kmirror keeps there "+
		"(positions, offset map, checkpoints) and a restart would copy again or skip records; set it with "+
		"`kafka-configs.sh --alter --entity-type topics --entity-name %s --add-config cleanup.policy=compact`, "+
		"or, if the state it holds can be given up, delete the topic (the flow then starts again from start_from): %w",
		topic, policy, topic, ErrStateTopicShape)
}

func compactOnly(policy string) bool {
	parts := strings.Split(policy, ",")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
	}
	return len(parts) == 1 && parts[0] == "compact"
}
