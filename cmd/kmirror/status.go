package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/status"
)

func newStatusCommand() *cobra.Command {
	var path, flowName string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status --config FILE [--flow NAME] [--json]",
		Short: "Show how each flow stands: state, lag, latency, heartbeats, errors",
		Long: `Status reads the clusters of a configuration and prints, for each flow, whether
it runs and on which instance, its topics and partitions, its lag (records not
yet copied, and the age of the oldest of them), its replication latency, the
age of its newest heartbeat on the target, its last error and the age of its
last consumer group sync; then the routes records take between the clusters.

It reads the flows' state topics on their targets and the end offsets on their
sources and never writes, so it works from any machine, whether "kmirror run"
runs or not. --json prints one JSON document instead.

Exit codes: 0 when every flow was read (lagging or not), 1 when a cluster could
not be reached or a topic read (what could be read is printed), 2 when the
configuration is invalid or --flow names no flow.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" {
				return exitError{exitConfig, errors.New("--config is required")}
			}
			cfg, err := config.Load(path)
			if err != nil {
				return exitError{exitConfig, err}
			}
			flows, err := status.Flows(cfg, flowName)
			if err != nil {
				return exitError{exitConfig, err}
			}
			logger := newLogger(logConfig(cmd, config.Log{Level: "error", Format: "text"}))
			rep, err := status.Collect(cmd.Context(), cfg, flows, logger)
			var werr error
			if asJSON {
				werr = writeJSON(cmd.OutOrStdout(), rep)
			} else {
				werr = status.WriteText(cmd.OutOrStdout(), rep)
			}
			if werr != nil {
				return exitError{exitRuntime, werr}
			}
			if err != nil {
				return exitError{exitRuntime, fmt.Errorf("%w; see the errors above", err)}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "configuration file (YAML)")
	cmd.Flags().StringVar(&flowName, "flow", "", "only this flow")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON document")
	return cmd
}
