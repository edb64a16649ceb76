package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kmirror/kmirror/internal/check"
	"github.com/kmirror/kmirror/internal/config"
)

// checkTimeout bounds a whole check.
const checkTimeout = 5 * time.Minute

func newCheckCommand() *cobra.Command {
	var path string
	var asJSON, allowEmpty bool
	cmd := &cobra.Command{
		Use:   "check --config FILE [--json] [--allow-empty]",
		Short: "Check a configuration against its clusters and print what each flow would do, changing nothing",
		Long: `check validates the configuration, connects to every cluster (each must
answer within its dial_timeout), checks that kmirror's principal has the
permissions it needs on each side, and prints the plan of each flow: the
topics each regex matches, the target topics it would create (partitions and
configs), the target topics that exist already and how they differ, its
state topics, the groups whose offsets it would sync and the provenance
routes.

It changes nothing on any cluster: topic creation and config changes are
asked with validateOnly, and permissions that only a write would show are
listed as "not checked".

Exit codes: 0 when all is well (warnings are printed), 1 on a problem (an
unreachable cluster, a missing permission, a topic the target would refuse)
or when a topics regex matches no source topic (a typo would otherwise
replicate nothing; --allow-empty makes that a warning), 2 when the
configuration is invalid.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" {
				return exitError{exitConfig, fmt.Errorf("--config is required")}
			}
			cfg, err := config.Load(path)
			if err != nil {
				return exitError{exitConfig, err}
			}
			logger := newLogger(logConfig(cmd, config.Log{Level: "error", Format: cfg.Log.Format}))
			ctx, cancel := context.WithTimeout(cmd.Context(), checkTimeout)
			defer cancel()
			rep := check.Run(ctx, cfg, logger)
			rep.Warnings = append(rep.Warnings, memoryWarnings(cfg)...)
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return exitError{exitRuntime, err}
				}
			} else {
				printReport(out, rep, allowEmpty)
			}
			if rep.Failed(allowEmpty) {
				return exitError{exitRuntime, fmt.Errorf("check failed: %d problem(s), %d topics regex(es) matching nothing", len(rep.Problems), len(rep.EmptyRegexes))}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "configuration file (YAML)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.Flags().BoolVar(&allowEmpty, "allow-empty", false, "a topics regex that matches no source topic is a warning, not a failure")
	return cmd
}

func printReport(w io.Writer, r *check.Report, allowEmpty bool) {
	fmt.Fprintln(w, "Clusters:")
	for _, c := range r.Clusters {
		if c.Reachable {
			fmt.Fprintf(w, "  %s: reachable in %s, as %s\n", c.Alias, c.Took.Round(time.Millisecond), c.Principal)
		} else {
			fmt.Fprintf(w, "  %s: UNREACHABLE after %s: %s\n", c.Alias, c.Took.Round(time.Millisecond), c.Error)
		}
	}
	for _, f := range r.Flows {
		fmt.Fprintf(w, "\nFlow %s: %s -> %s\n", f.Name, f.Source, f.Target)
		if f.Skipped != "" {
			fmt.Fprintf(w, "  not checked: %s\n", f.Skipped)
			continue
		}
		fmt.Fprintln(w, "  Topic regexes:")
		for _, m := range f.Regexes {
			if len(m.Matches) == 0 {
				fmt.Fprintf(w, "    %s: WARNING: matches no source topic\n", m.Regex)
			} else {
				fmt.Fprintf(w, "    %s: %s\n", m.Regex, strings.Join(m.Matches, ", "))
			}
		}
		fmt.Fprintf(w, "  Topics to create on %s: %d\n", f.Target, len(f.Create))
		for _, t := range f.Create {
			fmt.Fprintf(w, "    %s (from %s): %d partitions%s\n", t.Target, t.Source, t.Partitions, configsText(t.Configs))
		}
		fmt.Fprintf(w, "  Topics already on %s: %d\n", f.Target, len(f.Existing))
		for _, t := range f.Existing {
			fmt.Fprintf(w, "    %s (from %s): %d partitions on the target, %d on the source", t.Target, t.Source, t.TargetPartitions, t.Partitions)
			if t.Mismatch != "" {
				fmt.Fprintf(w, "; %s", t.Mismatch)
			}
			if len(t.ConfigChanges) > 0 {
				fmt.Fprintf(w, "; config sync would change: %s", strings.Join(t.ConfigChanges, ", "))
			}
			fmt.Fprintln(w)
		}
		if f.HeartbeatTopic != "" {
			fmt.Fprintf(w, "  Heartbeat topic: %s\n", f.HeartbeatTopic)
		}
		fmt.Fprintf(w, "  State topics: %s\n", strings.Join(f.StateTopics, ", "))
		if len(f.Groups) > 0 {
			fmt.Fprintf(w, "  Groups to sync: %s\n", strings.Join(f.Groups, ", "))
		} else {
			fmt.Fprintln(w, "  Groups to sync: none now")
		}
		fmt.Fprintln(w, "  Permissions:")
		for _, p := range f.Permissions {
			fmt.Fprintf(w, "    %-3s %s %s on %s\n", mark(p.Status), p.Cluster, p.Operation, p.Resource)
			if p.Status != check.OK && p.Status != check.Missing {
				fmt.Fprintf(w, "        %s\n", p.Status)
			}
		}
		if len(f.SourceACLs) > 0 {
			who := f.SourcePrincipal
			if who == "" {
				who = "kmirror's principal"
			}
			kind := "Read-only ACLs"
			if !f.SourceReadOnly {
				kind = "ACLs (not read-only)"
			}
			fmt.Fprintf(w, "  %s for %s on %s (all this flow needs there):\n", kind, who, f.Source)
			for _, a := range f.SourceACLs {
				fmt.Fprintf(w, "    %s\n", a)
			}
		}
	}
	if len(r.Routes) > 0 {
		fmt.Fprintln(w, "\nProvenance routes:")
		for _, rt := range r.Routes {
			fmt.Fprintf(w, "  %s\n", rt)
		}
	}
	if len(r.Warnings) > 0 {
		fmt.Fprintln(w, "\nWarnings:")
		for _, s := range r.Warnings {
			fmt.Fprintf(w, "  %s\n", s)
		}
	}
	if len(r.Problems) > 0 {
		fmt.Fprintln(w, "\nProblems:")
		for _, s := range r.Problems {
			fmt.Fprintf(w, "  %s\n", s)
		}
	}
	switch {
	case r.Failed(allowEmpty):
		fmt.Fprintln(w, "\nCheck FAILED.")
	default:
		fmt.Fprintln(w, "\nCheck passed; nothing was changed on any cluster.")
	}
}

func mark(status string) string {
	switch status {
	case check.OK:
		return "ok"
	case check.Missing:
		return "MISSING"
	}
	return "?"
}

func configsText(c map[string]string) string {
	if len(c) == 0 {
		return ""
	}
	parts := make([]string, 0, len(c))
	for _, k := range slices.Sorted(maps.Keys(c)) {
		parts = append(parts, k+"="+c[k])
	}
	return ", configs " + strings.Join(parts, ", ")
}
