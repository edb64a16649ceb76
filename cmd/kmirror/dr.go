package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/dr"
)

// drFlags are the flags every disaster-recovery command takes.
type drFlags struct {
	config string
	flow   string
	json   bool
}

func (f *drFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.config, "config", "c", "", "configuration file (YAML)")
	cmd.Flags().StringVar(&f.flow, "flow", "", "name of the flow")
	cmd.Flags().BoolVar(&f.json, "json", false, "print the result as JSON")
}

// open loads the configuration and connects to the flow's target.
func (f *drFlags) open(cmd *cobra.Command) (*dr.Env, error) {
	if f.config == "" || f.flow == "" {
		return nil, exitError{exitConfig, errors.New("--config and --flow are required")}
	}
	cfg, err := config.Load(f.config)
	if err != nil {
		return nil, exitError{exitConfig, err}
	}
	logger := newLogger(logConfig(cmd, config.Log{Level: "warn", Format: cfg.Log.Format}))
	env, err := dr.Open(cmd.Context(), cfg, f.flow, logger)
	if err != nil {
		return nil, exitError{exitRuntime, err}
	}
	return env, nil
}

func newOffsetsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "offsets",
		Short: "Inspect consumer group offsets across a flow",
	}
	var f drFlags
	var group string
	translate := &cobra.Command{
		Use:   "translate --config FILE --flow NAME --group GROUP",
		Short: "Show where a consumer group would resume on the target",
		Long: `Translate reads the group's committed offsets on the source and maps each,
exactly, to the target offset of the first record copied at or after it. When
the source is unreachable it prints the last checkpoints stored in the target.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if group == "" {
				return exitError{exitConfig, errors.New("--group is required")}
			}
			env, err := f.open(cmd)
			if err != nil {
				return err
			}
			defer env.Close()
			rows, err := env.Translate(cmd.Context(), group)
			if err != nil {
				return exitError{exitRuntime, err}
			}
			if f.json {
				return writeJSON(cmd.OutOrStdout(), rows)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TOPIC\tPARTITION\tSOURCE OFFSET\tTARGET TOPIC\tTARGET OFFSET\tEXACT\tFROM")
			for _, r := range rows {
				from := r.From
				if r.From == "checkpoint" {
					from += " (" + (time.Duration(r.CheckpointAgeMs) * time.Millisecond).Round(time.Second).String() + " old)"
				}
				fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%d\t%t\t%s\n", r.Topic, r.Partition, r.SourceOffset, r.TargetTopic, r.TargetOffset, r.Exact, from)
			}
			return w.Flush()
		},
	}
	f.register(translate)
	translate.Flags().StringVar(&group, "group", "", "consumer group")
	cmd.AddCommand(translate)
	return cmd
}

func newFailoverCommand() *cobra.Command {
	var f drFlags
	var o dr.FailoverOptions
	cmd := &cobra.Command{
		Use:   "failover --config FILE --flow NAME",
		Short: "Move a flow's consumer groups to its target cluster",
		Long: `Planned failover (the source is up): stop every "kmirror run" of the flow
(SIGTERM) and the producers writing to the source, then run failover. It
refuses while an instance runs the flow, or when a partition of the topics
it moves was not stopped cleanly by its last owner (an instance was killed):
--force proceeds anyway. It copies what is left,
waits until the flow's lag is 0 (--timeout), syncs every group's offsets one
last time, stops cleanly and prints a report. Consumers can then start on the
target with the same group names and continue exactly where they stopped.

Unplanned failover (--source-unreachable): the source is gone. Failover commits
the last checkpoints stored in the target to the target groups and reports the
recovery point: per partition, the last source offset copied and the time of
the newest record copied. Records after it are not on the target.

Every source topic the flow's filters match counts: if one is not on the
target (its target topic could not be created or grown), failover names it,
records no failover and exits 1.

Until "kmirror failback", "kmirror run" refuses to start the flow (--force
overrides).

Exit codes: 0 done, 1 failed or timed out (the report says what is left),
2 invalid configuration or flags.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, err := f.open(cmd)
			if err != nil {
				return err
			}
			defer env.Close()
			if !f.json {
				o.Progress = throttled(func(lag int64) {
					fmt.Fprintf(cmd.ErrOrStderr(), "waiting for the flow to catch up: %d records left\n", lag)
				})
			}
			rep, err := env.Failover(cmd.Context(), o)
			if f.json {
				if werr := writeJSON(cmd.OutOrStdout(), rep); werr != nil {
					return werr
				}
			} else {
				printFailover(cmd.OutOrStdout(), rep)
			}
			if err != nil {
				return exitError{exitRuntime, err}
			}
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 5*time.Minute, "how long a planned failover waits for the lag to reach 0")
	cmd.Flags().BoolVar(&o.SourceUnreachable, "source-unreachable", false, "fail over from the target alone; the source is gone")
	cmd.Flags().BoolVar(&o.Force, "force", false, "proceed although the flow did not stop cleanly (an instance was killed or crashed)")
	return cmd
}

func newFailbackCommand() *cobra.Command {
	var f drFlags
	var o dr.FailbackOptions
	cmd := &cobra.Command{
		Use:   "failback --config FILE --flow NAME",
		Short: "Return clients to a flow's source after a failover",
		Long: `After "kmirror failover", clients work on the flow's target. To return them:
stop the producers and consumers on the target, then run failback. It copies
back to the old source only the records written on the target since the
failover (nothing from before is copied again), translates the consumer
groups of the target back to the source, and sets the flow to resume after
the copied-back records. Then start "kmirror run" again and move the clients
back to the source. Needs topic_naming: identity. Like a planned failover,
it refuses while an instance runs the flow or when a partition failed back
was not stopped cleanly.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, err := f.open(cmd)
			if err != nil {
				return err
			}
			defer env.Close()
			if !f.json {
				o.Progress = throttled(func(lag int64) { fmt.Fprintf(cmd.ErrOrStderr(), "copying back: %d records left\n", lag) })
			}
			rep, err := env.Failback(cmd.Context(), o)
			if err != nil {
				return exitError{exitRuntime, err}
			}
			if f.json {
				return writeJSON(cmd.OutOrStdout(), rep)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Failback of flow %s (copied back by %s)\n\n", rep.Flow, rep.ReverseFlow)
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TOPIC\tPARTITION\tEND ON TARGET\tCOPIED BACK UP TO")
			for _, p := range rep.Partitions {
				fmt.Fprintf(w, "%s\t%d\t%d\t%d\n", p.Topic, p.Partition, p.SourceEnd, p.Replicated)
			}
			w.Flush()
			fmt.Fprintln(out)
			printGroups(out, rep.Groups, "source", "moved back")
			fmt.Fprintf(out, "\nRecords copied back: %d\nStart `kmirror run` for the flow again; it resumes after them.\n", rep.CopiedBack)
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 5*time.Minute, "how long to wait for the copy back to catch up")
	return cmd
}

func printFailover(out io.Writer, rep dr.Report) {
	kind := "planned"
	if !rep.Planned {
		kind = "unplanned (source unreachable)"
	}
	fmt.Fprintf(out, "Failover of flow %s: %s\n\n", rep.Flow, kind)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TOPIC\tPARTITION\tTARGET TOPIC\tSOURCE END\tREPLICATED UP TO\tNOT REPLICATED\tNEWEST RECORD COPIED")
	for _, p := range rep.Partitions {
		stamp := "-"
		if p.LastTimestampMs > 0 {
			stamp = time.UnixMilli(p.LastTimestampMs).UTC().Format(time.RFC3339Nano)
		}
		replicated := strconv.FormatInt(p.Replicated, 10)
		if p.Replicated < 0 {
			replicated = "-" // never copied
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", p.Topic, p.Partition, p.TargetTopic, orUnknown(p.SourceEnd), replicated, orUnknown(p.NotReplicated), stamp)
	}
	w.Flush()
	fmt.Fprintln(out)
	printGroups(out, rep.Groups, "target", "moved")
	fmt.Fprintln(out)
	if rep.NotReplicated >= 0 {
		fmt.Fprintf(out, "Records not replicated: %d\n", rep.NotReplicated)
	} else {
		fmt.Fprintln(out, "Records not replicated: unknown (source unreachable); see REPLICATED UP TO per partition")
	}
	if !rep.RecoveryPoint.IsZero() {
		fmt.Fprintf(out, "Recovery point: %s (newest record copied, %s ago)\n",
			rep.RecoveryPoint.UTC().Format(time.RFC3339Nano), time.Since(rep.RecoveryPoint).Round(time.Millisecond))
	}
}

// printGroups prints what a failover or failback did to each group on the
// cluster named where.
func printGroups(out io.Writer, moves []dr.GroupMove, where, moved string) {
	if len(moves) == 0 {
		fmt.Fprintln(out, "No consumer group to move.")
		return
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "GROUP\tPARTITIONS\tCOMMITTED ON %s\tSTATUS\n", strings.ToUpper(where))
	for _, g := range moves {
		status := moved
		switch {
		case g.Error != "":
			status = "error: " + g.Error
		case g.Active:
			status = "left alone: active on the " + where
		case g.Committed == 0:
			status = "already in place"
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%s\n", g.Group, g.Partitions, g.Committed, status)
	}
	w.Flush()
}

// throttled calls report when the count changes, or every 5 s while it
// does not.
func throttled(report func(int64)) func(int64) {
	last, at := int64(-1), time.Time{}
	return func(n int64) {
		if n != last || time.Since(at) >= 5*time.Second {
			last, at = n, time.Now()
			report(n)
		}
	}
}

func orUnknown(n int64) string {
	if n < 0 {
		return "?"
	}
	return strconv.FormatInt(n, 10)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
