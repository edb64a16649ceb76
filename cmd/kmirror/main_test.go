package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// execute runs the root command with args and returns its output and
// error.
func execute(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := newRootCommand()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err = cmd.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// exitCode is the process exit code main would use for err.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

func TestVersion(t *testing.T) {
	plat := " " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"
	tests := []struct {
		name, version, commit string
		args                  []string
		want                  string
	}{
		{"set at build time", "v1.2.3", "0123456789abcdef0123", []string{"version"},
			"kmirror v1.2.3 (commit 0123456789ab, " + runtime.Version() + "," + plat},
		{"--version", "v1.2.3", "abc1234-dirty", []string{"--version"},
			"kmirror v1.2.3 (commit abc1234-dirty, " + runtime.Version() + "," + plat},
		{"another", "0.0.1-rc.1", "abc1234", []string{"version"},
			"kmirror 0.0.1-rc.1 (commit abc1234, " + runtime.Version() + "," + plat},
	}
	savedVersion, savedCommit := version, commit
	t.Cleanup(func() { version, commit = savedVersion, savedCommit })
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			version, commit = tc.version, tc.commit
			out, _, err := execute(t, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if out != tc.want {
				t.Errorf("output %q, want %q", out, tc.want)
			}
			if versionString() != tc.version {
				t.Errorf("versionString() = %q, want %q", versionString(), tc.version)
			}
		})
	}

	version, commit = "", ""
	out, _, err := execute(t, "version")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "kmirror dev (") || !strings.HasSuffix(out, plat) {
		t.Errorf("version without build-time values printed %q, want \"kmirror dev (..., go1.x, os/arch)\"", out)
	}

	if _, _, err := execute(t, "version", "extra"); err == nil {
		t.Error("version with an argument succeeded, want an error")
	}
}

func TestRunErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	invalid := write("invalid.yaml", `clusters:
  primary:
    bootstrap: ["127.0.0.1:9092"]
flows: []
`)
	// Port 1 refuses connections at once; the short dial timeout keeps the
	// reachability check quick.
	unreachable := write("unreachable.yaml", `clusters:
  a:
    bootstrap_servers: ["127.0.0.1:1"]
    dial_timeout: 300ms
  b:
    bootstrap_servers: ["127.0.0.1:1"]
    dial_timeout: 300ms
flows:
  - source: a
    target: b
http:
  listen: "off"
`)
	tests := []struct {
		name string
		args []string
		code int
		want []string // substrings of the error
	}{
		{"no config", []string{"run"}, exitConfig, []string{"--config is required"}},
		{"empty config", []string{"run", "--config", ""}, exitConfig, []string{"--config is required"}},
		{"missing file", []string{"run", "--config", filepath.Join(dir, "nope.yaml")}, exitConfig, []string{"nope.yaml"}},
		{"invalid config", []string{"run", "-c", invalid}, exitConfig, []string{"invalid.yaml:3:", "clusters.primary.bootstrap", "unknown key"}},
		{"unreachable cluster", []string{"run", "--config", unreachable}, exitRuntime, []string{`cluster "a"`, "127.0.0.1:1", "unreachable"}},
		{"positional argument", []string{"run", "kmirror.yaml"}, 1, []string{"unknown command"}},
		{"unknown flag", []string{"run", "--nope"}, 1, []string{"unknown flag"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, _, err := execute(t, tc.args...)
			if err == nil {
				t.Fatal("run succeeded, want an error")
			}
			if got := exitCode(err); got != tc.code {
				t.Errorf("exit code %d, want %d (err: %v)", got, tc.code, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"Usage:", "kmirror [command]", "run", "demo", "version", "kmirror demo"}},
		{[]string{"help"}, []string{"Usage:", "kmirror [command]"}},
		{[]string{"run", "--help"}, []string{"Usage:", "kmirror run --config FILE", "-c, --config", "Exit codes"}},
		{[]string{"run", "-h"}, []string{"kmirror run --config FILE"}},
		{[]string{"demo", "--help"}, []string{"Usage:", "kmirror demo", "--records", "--serve", "--http", "--timeout"}},
		{[]string{"version", "--help"}, []string{"Usage:", "kmirror version", "Print the kmirror version"}},
		{[]string{"help", "run"}, []string{"kmirror run --config FILE"}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, _, err := execute(t, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("help output does not contain %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestUnknownCommand(t *testing.T) {
	_, _, err := execute(t, "mirror")
	if err == nil || !strings.Contains(err.Error(), `unknown command "mirror"`) {
		t.Errorf("err = %v, want unknown command", err)
	}
}
