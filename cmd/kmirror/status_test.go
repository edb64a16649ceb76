package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kmirror/kmirror/internal/status"
)

func TestStatusExitCodes(t *testing.T) {
	dir := t.TempDir()
	// Port 1 refuses connections at once.
	unreachable := filepath.Join(dir, "unreachable.yaml")
	if err := os.WriteFile(unreachable, []byte(`clusters:
  a: {bootstrap_servers: ["127.0.0.1:1"], dial_timeout: 300ms}
  b: {bootstrap_servers: ["127.0.0.1:1"], dial_timeout: 300ms}
flows:
  - {name: ab, source: a, target: b}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string // in the error, or in the output for a runtime error
	}{
		{"no config", []string{"status"}, exitConfig, "--config is required"},
		{"missing file", []string{"status", "--config", filepath.Join(dir, "nope.yaml")}, exitConfig, "nope.yaml"},
		{"unknown flow", []string{"status", "--config", unreachable, "--flow", "xy"}, exitConfig, `no flow named "xy"; flows: ab`},
		{"unreachable clusters", []string{"status", "--config", unreachable}, exitRuntime, `cluster "b" (127.0.0.1:1) unreachable`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			out, _, err := execute(t, tc.args...)
			if got := exitCode(err); got != tc.code {
				t.Fatalf("exit code %d, want %d (err: %v)", got, tc.code, err)
			}
			if !strings.Contains(err.Error(), tc.want) && !strings.Contains(out, tc.want) {
				t.Errorf("neither the error %q nor the output contains %q:\n%s", err, tc.want, out)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}

	// What could be read is still printed, as JSON too.
	out, _, err := execute(t, "status", "--config", unreachable, "--json")
	if exitCode(err) != exitRuntime {
		t.Fatalf("exit code %d, want %d", exitCode(err), exitRuntime)
	}
	var rep status.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json output does not parse: %v\n%s", err, out)
	}
	if len(rep.Flows) != 1 || rep.Flows[0].State != status.StateUnknown || len(rep.Flows[0].Errors) == 0 || len(rep.Routes) != 1 {
		t.Errorf("report = %+v, want flow ab in state unknown with its errors, and one route", rep)
	}
}

func TestStatusHelp(t *testing.T) {
	out, _, err := execute(t, "status", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"kmirror status --config FILE", "--flow", "--json", "Exit codes"} {
		if !strings.Contains(out, w) {
			t.Errorf("help lacks %q:\n%s", w, out)
		}
	}
}
