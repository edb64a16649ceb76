package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/mm2import"
)

func newImportMM2Command() *cobra.Command {
	return &cobra.Command{
		Use:   "import-mm2 MM2_PROPERTIES",
		Short: "Convert a MirrorMaker 2 configuration (mm2.properties) to a kmirror configuration",
		Long: `import-mm2 reads the mm2.properties file of a MirrorMaker 2 deployment
(connect-mirror-maker.sh) and writes an equivalent kmirror YAML configuration
on stdout: the clusters with their security settings, one flow per enabled
replication flow, with its topics, groups, naming, config and ACL sync,
offset sync, intervals and heartbeats.

On stderr it lists the environment variables the configuration refers to
(passwords are never copied: they become ${VAR} references), the key stores
to convert to PEM with the command to do it, and every property it could
not map with the reason. "-" reads the file from stdin.

Check the result with "kmirror check --config FILE" before running it.
The mapping is in docs/migrate-from-mm2.md.

Exit codes: 0 on success, 2 when the file cannot be read or converted.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var data []byte
			var err error
			if args[0] == "-" {
				data, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), config.MaxFileSize+1))
			} else {
				data, err = os.ReadFile(args[0])
			}
			if err != nil {
				return exitError{exitConfig, fmt.Errorf("reading %s: %w", args[0], err)}
			}
			res, err := mm2import.Convert(data)
			if err != nil {
				return exitError{exitConfig, fmt.Errorf("%s: %w", args[0], err)}
			}
			if _, err := cmd.OutOrStdout().Write(res.YAML); err != nil {
				return exitError{exitRuntime, err}
			}
			stderr := cmd.ErrOrStderr()
			if len(res.Env) > 0 {
				fmt.Fprintln(stderr, "Set these environment variables before running kmirror:")
				for _, e := range res.Env {
					fmt.Fprintf(stderr, "  %s  %s\n", e.Name, e.What)
				}
			}
			if len(res.Notes) > 0 {
				fmt.Fprintln(stderr, "Not mapped, or mapped with a caveat:")
				for _, n := range res.Notes {
					fmt.Fprintf(stderr, "  %s\n", n)
				}
			}
			return nil
		},
	}
}
