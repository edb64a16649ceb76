package main

import (
	"strings"
	"testing"

	"github.com/kmirror/kmirror/internal/config"
)

func TestLogFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want string // in the error
	}{
		{"valid level and format", []string{"--log-level", "debug", "--log-format", "json", "version"}, 0, ""},
		{"valid after the command", []string{"version", "--log-level=WARN"}, 0, ""},
		{"bad level", []string{"--log-level", "loud", "version"}, exitConfig, `--log-level "loud"`},
		{"bad format", []string{"version", "--log-format", "xml"}, exitConfig, `--log-format "xml"`},
		{"bad level on run", []string{"run", "--config", "x.yaml", "--log-level", "trace"}, exitConfig, `--log-level "trace"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := execute(t, tc.args...)
			if got := exitCode(err); got != tc.code {
				t.Fatalf("exit code %d (%v), want %d", got, err, tc.code)
			}
			if tc.want != "" && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestLogConfigOverrides(t *testing.T) {
	fromFile := config.Log{Level: "info", Format: "text"}
	tests := []struct {
		args []string
		want config.Log
	}{
		{nil, fromFile},
		{[]string{"--log-level", "debug"}, config.Log{Level: "debug", Format: "text"}},
		{[]string{"--log-format", "json"}, config.Log{Level: "info", Format: "json"}},
		{[]string{"--log-level", "error", "--log-format", "json"}, config.Log{Level: "error", Format: "json"}},
	}
	for _, tc := range tests {
		root := newRootCommand()
		run, _, err := root.Find([]string{"run"})
		if err != nil {
			t.Fatal(err)
		}
		// The persistent flags of root are parsed by run.
		if err := run.ParseFlags(append([]string{"--config", "x.yaml"}, tc.args...)); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if got := logConfig(run, fromFile); got != tc.want {
			t.Errorf("%v: logConfig = %+v, want %+v", tc.args, got, tc.want)
		}
	}
}

func TestCompletion(t *testing.T) {
	for shell, want := range map[string]string{
		"bash": "bash completion V2 for kmirror",
		"zsh":  "#compdef kmirror",
		"fish": "fish completion for kmirror",
	} {
		out, _, err := execute(t, "completion", shell)
		if err != nil {
			t.Fatalf("completion %s: %v", shell, err)
		}
		if !strings.Contains(out, want) {
			t.Errorf("completion %s: output lacks %q:\n%.300s", shell, want, out)
		}
	}
	// The completion of subcommands works through cobra's __complete.
	out, _, err := execute(t, "__complete", "ver")
	if err != nil || !strings.Contains(out, "verify") || !strings.Contains(out, "version") {
		t.Errorf("__complete ver = %q, %v; want verify and version", out, err)
	}
}
