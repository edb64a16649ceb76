package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/demo"
)

func newDemoCommand() *cobra.Command {
	o := demo.Options{}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Replicate sample traffic between two embedded clusters and verify it",
		Long: `Demo starts two in-process Kafka-protocol clusters, produces sample records
(null keys and values, empty values, duplicate headers, old timestamps) into
three topics, replicates them with a real flow through the same code as
"kmirror run", verifies the target record by record and prints a summary.

With --serve it keeps running afterwards and prints the bootstrap addresses
and the metrics URL, so you can point kcat or curl at it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Out = cmd.OutOrStdout()
			o.Version = versionString()
			o.Logger = newLogger(logConfig(cmd, config.Log{Level: "warn", Format: "text"}))
			return demo.Run(cmd.Context(), o)
		},
	}
	cmd.Flags().IntVar(&o.Records, "records", 30000, "records to produce")
	cmd.Flags().BoolVar(&o.Serve, "serve", false, "keep running after the verification")
	cmd.Flags().StringVar(&o.HTTPListen, "http", "127.0.0.1:0", "admin HTTP address (port 0 picks a free port)")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 2*time.Minute, "give up if replication has not caught up by then")
	return cmd
}
