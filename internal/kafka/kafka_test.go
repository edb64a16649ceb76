package kafka

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/kfaketest"
	"github.com/kmirror/kmirror/internal/retry"
)

func TestEnsureCompactedTopic(t *testing.T) {
	cl := kfaketest.New(t)
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, tc := range []struct {
		name    string
		policy  string // "" creates no topic first
		wantErr bool
	}{
		{name: "absent", policy: ""},
		{name: "compact", policy: "compact"},
		{name: "delete", policy: "delete", wantErr: true},
		{name: "compact-delete", policy: "compact,delete", wantErr: true},
		{name: "delete-compact", policy: "delete, compact", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic := "state-" + tc.name
			if tc.policy != "" {
				if _, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"cleanup.policy": kadm.StringPtr(tc.policy)}, topic); err != nil {
					t.Fatal(err)
				}
			}
			err := EnsureCompactedTopic(ctx, adm, topic, 0, map[string]string{"min.compaction.lag.ms": "60000"})
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrStateTopicShape) {
				t.Fatalf("error %v does not wrap ErrStateTopicShape", err)
			}
			for _, want := range []string{topic, "cleanup.policy", `"` + tc.policy + `"`, `expected "compact"`, "kafka-configs.sh"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}

	// A topic kmirror creates has the state topic configs.
	described, err := adm.DescribeTopicConfigs(ctx, "state-absent")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := described.On("state-absent", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, cfg := range rc.Configs {
		got[cfg.Key] = cfg.MaybeValue()
	}
	want := map[string]string{"min.compaction.lag.ms": "60000"}
	for k, v := range StateTopicConfigs {
		want[k] = v
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("created topic: %s = %q, want %q", k, got[k], v)
		}
	}
}

// A broker that is down makes franz-go log an error on every connection
// attempt: each message passes once per interval, not once per attempt.
func TestClientLoggerThrottlesErrors(t *testing.T) {
	var buf bytes.Buffer
	l := clientLogger{l: slog.New(slog.NewTextHandler(&buf, nil)), errs: &errorThrottle{seen: map[string]*retry.Throttle{}}}
	for range 20 {
		l.Log(kgo.LogLevelError, "unable to request api versions", "broker", 1)
		l.Log(kgo.LogLevelError, "unable to dial", "broker", 1)
	}
	if n := strings.Count(buf.String(), "\n"); n != 2 {
		t.Fatalf("%d lines for 40 errors of 2 kinds, want 2:\n%s", n, buf.String())
	}
}
