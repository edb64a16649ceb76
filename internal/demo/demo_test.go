package demo

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestDemoVerifiesEveryRecord(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := Run(ctx, Options{
		Records:    4000,
		HTTPListen: "127.0.0.1:0",
		Timeout:    45 * time.Second,
		Out:        &out,
		Logger:     slog.New(slog.DiscardHandler),
		Version:    "test",
	})
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	for _, want := range []string{"records verified     4000 of 4000", "Every record verified.", "records replicated   4000\n", `written to dr's "heartbeats" every second once primary answered, newest seen`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
