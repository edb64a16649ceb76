package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/kfaketest"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/progress"
)

// TestRunRefusesFailedOverFlow checks that run does not start a flow whose
// progress topic holds a failover not failed back, unless --force.
func TestRunRefusesFailedOverFlow(t *testing.T) {
	src, dst := kfaketest.Cluster(t), kfaketest.Cluster(t)
	cfgPath := filepath.Join(t.TempDir(), "kmirror.yaml")
	cfg := fmt.Sprintf(`clusters:
  primary:
    bootstrap_servers: [%q]
  dr:
    bootstrap_servers: [%q]
flows:
  - name: primary-to-dr
    source: primary
    target: dr
http:
  listen: "off"
`, src.ListenAddrs()[0], dst.ListenAddrs()[0])
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(dst.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	store := progress.NewStore(cl, policy.ProgressTopic("primary-to-dr"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := store.Ensure(ctx, 0); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

	tests := []struct {
		name     string
		failover bool // a failover is recorded and not failed back
		args     []string
		code     int
		want     []string
	}{
		{"no failover recorded", false, nil, 0, nil},
		{"failover recorded", true, nil, exitConfig, []string{`flow "primary-to-dr"`, `failed over to "dr" at 2026-03-04T05:06:07Z`,
			"kmirror failback --config " + cfgPath + " --flow primary-to-dr", "--force"}},
		{"failover recorded, --force", true, []string{"--force"}, 0, nil},
		{"failed back", false, nil, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.failover {
				err = store.PutFailover(ctx, progress.Failover{AtMs: at.UnixMilli(), Planned: true})
			} else {
				err = store.ClearFailover(ctx)
			}
			if err != nil {
				t.Fatal(err)
			}
			// A flow that starts runs until the context ends, then stops
			// cleanly (exit 0).
			runCtx, stop := context.WithTimeout(ctx, 3*time.Second)
			defer stop()
			cmd := newRootCommand()
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			cmd.SetArgs(append([]string{"run", "--config", cfgPath}, tc.args...))
			err := cmd.ExecuteContext(runCtx)
			if got := exitCode(err); got != tc.code {
				t.Fatalf("exit code %d, want %d (err: %v)", got, tc.code, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
