package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/runner"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "kmirror",
		Short: "Replicate Apache Kafka topics between clusters",
		Long: `kmirror copies topics from a source Kafka cluster to a target cluster, keeping
partitions, order, keys, values, headers and timestamps, for disaster recovery,
migrations, fan-out and aggregation.

Start with "kmirror demo" to see it work with no setup.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newRunCommand(), newDemoCommand(), newOffsetsCommand(), newFailoverCommand(), newFailbackCommand(), newVersionCommand())
	return root
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the kmirror version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "kmirror", versionString())
		},
	}
}

// startupTimeout bounds the check that every cluster is reachable.
const startupTimeout = 12 * time.Second

func newRunCommand() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the flows of a configuration file until interrupted",
		Long: `Run loads the configuration, checks that every cluster is reachable, then
replicates every flow until SIGINT or SIGTERM, on which it finishes the writes
in flight and stores its progress in the target cluster.

Exit codes: 0 after a clean shutdown, 1 when a cluster cannot be reached at
start, 2 when the configuration is invalid.`,
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
			return run(cmd.Context(), cfg, newLogger(cfg.Log))
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "configuration file (YAML)")
	return cmd
}

func run(ctx context.Context, cfg *config.Config, logger *slog.Logger) error {
	r, err := runner.New(cfg, versionString(), logger)
	if err != nil {
		return exitError{exitConfig, err}
	}
	checkCtx, cancel := context.WithTimeout(ctx, startupTimeout)
	err = r.Check(checkCtx)
	cancel()
	if err != nil {
		r.Close()
		return exitError{exitRuntime, err}
	}
	logger.Info("kmirror started", "version", versionString(), "flows", len(r.Flows), "http", r.HTTPAddr())
	if err := r.Run(ctx); err != nil {
		return exitError{exitRuntime, err}
	}
	logger.Info("kmirror stopped")
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
