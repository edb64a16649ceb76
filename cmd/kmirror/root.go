package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kmirror/kmirror/internal/buildinfo"
	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/runner"
)

// version and commit are set at build time:
//
//	go build -ldflags "-X main.version=v1.2.3 -X main.commit=$(git rev-parse HEAD)" ./cmd/kmirror
//
// Empty means not set; buildinfo then falls back to the Go build information.
var (
	version = ""
	commit  = ""
)

// buildInfo describes this binary: version, commit, Go version, platform.
func buildInfo() buildinfo.Info { return buildinfo.Read(version, commit) }

// versionString is the version alone ("v1.2.3", or "dev"), as the admin API
// and the logs show it.
func versionString() string { return buildInfo().Version() }

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "kmirror",
		Short: "Replicate Apache Kafka topics between clusters",
		Long: `kmirror copies topics from a source Kafka cluster to a target cluster, keeping
partitions, order, keys, values, headers and timestamps, for disaster recovery,
migrations, fan-out and aggregation.

Start with "kmirror demo" to see it work with no setup.`,
		Version:       buildInfo().String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("{{.Version}}\n")
	addLogFlags(root)
	root.AddCommand(newRunCommand(), newDemoCommand(), newOffsetsCommand(), newFailoverCommand(), newFailbackCommand(), newStatusCommand(), newVerifyCommand(), newCheckCommand(), newImportMM2Command(), newVersionCommand())
	return root
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the kmirror version, commit, Go version and platform",
		Long: `Print the kmirror version in one line, with the commit it was built
from, the Go version that built it and the platform, such as

  kmirror v1.2.3 (commit 0123456789ab, go1.26.8, linux/amd64)

Release builds set the version and commit at link time; a build from a git
checkout shows "dev" and the checked-out commit ("-dirty" with uncommitted
changes). "kmirror --version" prints the same.`,
		Args: cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), buildInfo().String())
		},
	}
}

// startupTimeout bounds the check that every cluster is reachable.
const startupTimeout = 12 * time.Second

func newRunCommand() *cobra.Command {
	var path string
	var force bool
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the flows of a configuration file until interrupted",
		Long: `Run loads the configuration, checks that every cluster is reachable, then
replicates every flow until SIGINT or SIGTERM, on which it finishes the writes
in flight and stores its progress in the target cluster.

A flow that was failed over ("kmirror failover") and not failed back is not
started: clients may be writing on its target, and copying the source there
again would mix the two. Run "kmirror failback" first, or pass --force.

Exit codes: 0 after a clean shutdown, 1 when a cluster cannot be reached at
start, 2 when the configuration is invalid or a flow is failed over.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" {
				return exitError{exitConfig, fmt.Errorf("--config is required")}
			}
			cfg, err := config.Load(path)
			if err != nil {
				return exitError{exitConfig, err}
			}
			if prof := os.Getenv("KMIRROR_CPUPROFILE"); prof != "" {
				stop, err := startCPUProfile(prof)
				if err != nil {
					return exitError{exitRuntime, err}
				}
				defer stop()
			}
			if prof := os.Getenv("KMIRROR_HEAPPROFILE"); prof != "" {
				stop, err := startHeapProfile(prof, time.Second)
				if err != nil {
					return exitError{exitRuntime, err}
				}
				defer stop()
			}
			return run(cmd.Context(), cfg, force, newLogger(logConfig(cmd, cfg.Log)))
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "configuration file (YAML)")
	cmd.Flags().BoolVar(&force, "force", false, "start flows that were failed over and not failed back (logs a warning)")
	return cmd
}

// failoverCheckTimeout bounds the reading of the flows' failover records.
const failoverCheckTimeout = 2 * time.Minute

func run(ctx context.Context, cfg *config.Config, force bool, logger *slog.Logger) error {
	warnInsecure(cfg, logger)
	r, err := runner.New(cfg, versionString(), logger)
	if err != nil {
		return exitError{exitConfig, err}
	}
	r.SetBuildInfo(buildInfo())
	checkCtx, cancel := context.WithTimeout(ctx, startupTimeout)
	err = r.Check(checkCtx)
	cancel()
	if err != nil {
		r.Close()
		return exitError{exitRuntime, err}
	}
	if err := checkFailovers(ctx, r, cfg.File, force, logger); err != nil {
		r.Close()
		return err
	}
	if p, ok := applyMemory(cfg, logger); ok {
		r.SetMemory(p)
	}
	logger.Info("kmirror started", "version", versionString(), "flows", len(r.Flows), "http", r.HTTPAddr())
	if err := r.Run(ctx); err != nil {
		return exitError{exitRuntime, err}
	}
	logger.Info("kmirror stopped")
	return nil
}

// checkFailovers refuses to run flows that were failed over and not failed
// back, unless force is set, in which case it logs a warning for each.
func checkFailovers(ctx context.Context, r *runner.Runner, file string, force bool, logger *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, failoverCheckTimeout)
	defer cancel()
	pending, err := r.PendingFailovers(ctx)
	if err != nil {
		return exitError{exitRuntime, err}
	}
	var msgs []string
	for _, p := range pending {
		kind := "planned"
		if !p.Planned {
			kind = "unplanned"
		}
		at := p.At.UTC().Format(time.RFC3339)
		if force {
			logger.Warn("starting a flow that was failed over and not failed back (--force): it copies the source to the target again, where clients may have written since",
				"flow", p.Flow, "source", p.Source, "target", p.Target, "failed_over_at", at, "failover", kind)
			continue
		}
		msgs = append(msgs, fmt.Sprintf("flow %q was failed over to %q at %s (%s failover) and not failed back; "+
			"run `kmirror failback --config %s --flow %s` to return the clients to %q, or pass --force to replicate %q to %q anyway",
			p.Flow, p.Target, at, kind, file, p.Flow, p.Source, p.Source, p.Target))
	}
	if len(msgs) > 0 {
		return exitError{exitConfig, errors.New(strings.Join(msgs, "; "))}
	}
	return nil
}

// startCPUProfile writes a CPU profile of the whole run to path, for
// `go tool pprof`.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("KMIRROR_CPUPROFILE: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("KMIRROR_CPUPROFILE: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// Global flags that set how commands log.
const (
	flagLogLevel  = "log-level"
	flagLogFormat = "log-format"
)

// addLogFlags adds --log-level and --log-format to root and every command
// under it, and checks their values before any command runs.
func addLogFlags(root *cobra.Command) {
	root.PersistentFlags().String(flagLogLevel, "", "log level: debug, info, warn or error (overrides the configuration's log.level)")
	root.PersistentFlags().String(flagLogFormat, "", "log format: text or json (overrides the configuration's log.format)")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		c := logConfig(cmd, config.Log{})
		if c.Level != "" && !slices.Contains([]string{"debug", "info", "warn", "error"}, strings.ToLower(c.Level)) {
			return exitError{exitConfig, fmt.Errorf("--%s %q: want debug, info, warn or error", flagLogLevel, c.Level)}
		}
		if c.Format != "" && c.Format != "text" && c.Format != "json" {
			return exitError{exitConfig, fmt.Errorf("--%s %q: want text or json", flagLogFormat, c.Format)}
		}
		return nil
	}
}

// logConfig returns c with the level and format given by --log-level and
// --log-format, where given.
func logConfig(cmd *cobra.Command, c config.Log) config.Log {
	if v, err := cmd.Flags().GetString(flagLogLevel); err == nil && v != "" {
		c.Level = v
	}
	if v, err := cmd.Flags().GetString(flagLogFormat); err == nil && v != "" {
		c.Format = v
	}
	return c
}

func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	switch strings.ToLower(c.Level) {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// warnInsecure logs once, at start, each cluster whose broker certificates
// are not verified.
func warnInsecure(cfg *config.Config, logger *slog.Logger) {
	aliases := make([]string, 0, len(cfg.Clusters))
	for alias := range cfg.Clusters {
		aliases = append(aliases, alias)
	}
	slices.Sort(aliases)
	for _, alias := range aliases {
		if t := cfg.Clusters[alias].TLS; t != nil && t.Enabled && t.InsecureSkipVerify {
			logger.Warn("tls.insecure_skip_verify is set: the brokers' certificates are not verified, "+
				"so anyone on the network path can read and change the traffic, credentials included", "cluster", alias)
		}
	}
}
