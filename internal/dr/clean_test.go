package dr

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/kfaketest"
	"github.com/kmirror/kmirror/internal/ownership"
	"github.com/kmirror/kmirror/internal/progress"
)

// TestNotClean checks the clean-stop check of failover and failback: only
// the partitions selected count, each must be Stopped, and a member of the
// flow's ownership group is named as running it.
func TestNotClean(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := kfaketest.Cluster(t)
	e := &Env{Logger: slog.New(slog.DiscardHandler), Flow: &config.Flow{Name: "a-to-b"}, target: kfaketest.Client(t, c)}
	a0, a1, gone := progress.Partition{Topic: "a"}, progress.Partition{Topic: "a", Partition: 1}, progress.Partition{Topic: "gone"}
	loaded := progress.Loaded{Positions: map[progress.Partition]progress.Position{
		a0: {Stopped: true}, a1: {Stopped: true}, gone: {},
	}}
	if err := e.notClean(ctx, loaded, progress.InTopics("a")); err != nil {
		t.Errorf("every position of topic a Stopped, the deleted topic's not: %v, want clean", err)
	}
	err := e.notClean(ctx, loaded, nil)
	if !errors.Is(err, ErrNotClean) || !strings.Contains(err.Error(), "1 partitions were not stopped cleanly by their last owner (gone/0)") {
		t.Errorf("all partitions: %v, want ErrNotClean naming gone/0", err)
	}

	// An instance runs the flow: it is named, whatever the positions say.
	m := ownership.Join(ownership.Options{Client: kfaketest.Client(t, c), Group: "__kmirror.a-to-b.owners", Timeout: 6 * time.Second,
		Self: ownership.Identity{Instance: "host-a:42", Host: "host-a", PID: 42}, Logger: e.Logger, Partitions: true})
	if _, err := m.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	err = e.notClean(ctx, loaded, progress.InTopics("a"))
	if !errors.Is(err, ErrNotClean) || !strings.Contains(err.Error(), "it runs on host-a:42") {
		t.Errorf("with a member in the ownership group: %v, want ErrNotClean naming host-a:42", err)
	}
	m.Leave()
	if err := e.notClean(ctx, loaded, progress.InTopics("a")); err != nil {
		t.Errorf("after the member left: %v, want clean", err)
	}
}
