package replicate

import (
	"log/slog"
	"testing"
	"time"

	"github.com/kmirror/kmirror/internal/progress"
)

// TestReleaseRacingProgressWriteKeepsStopped starts a progress write right
// after Release stored a partition's clean stop and before the partition
// left the data plane: the position stored last for the released
// partition is still its clean stop (Stopped), not the racing write's.
func TestReleaseRacingProgressWriteKeepsStopped(t *testing.T) {
	e := newEnv(t)
	const src, dst = "t", "primary.t"
	e.createTopic(t, e.srcAdmin, src, 1, nil)
	e.createTopic(t, e.tgtAdmin, dst, 1, nil)
	r := New(Options{
		Flow: flowName, Source: e.srcClient, Target: e.tgtClient, Progress: e.store,
		ProgressInterval: time.Hour, // the test writes progress itself
		Metrics:          e.metrics, Logger: slog.New(slog.DiscardHandler),
	})
	e.run(t, r)
	p0 := progress.Partition{Topic: src, Partition: 0}
	r.Add([]Assignment{{Source: p0, TargetTopic: dst, Start: progress.Position{SourceNext: 7, TargetNext: 7}}})
	if err := r.writeProgress(e.ctx); err != nil {
		t.Fatal(err)
	}
	racing := make(chan error, 1)
	releaseStoredHook = func() {
		releaseStoredHook = nil
		go func() { racing <- r.writeProgress(e.ctx) }()
		// Long enough for the racing write to store whatever it finds.
		time.Sleep(200 * time.Millisecond)
	}
	t.Cleanup(func() { releaseStoredHook = nil })
	if err := r.Release(e.ctx, []progress.Partition{p0}); err != nil {
		t.Fatal(err)
	}
	if err := <-racing; err != nil {
		t.Fatal(err)
	}
	loaded, err := e.store.Load(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if pos := loaded.Positions[p0]; pos.SourceNext != 7 || !pos.Stopped {
		t.Errorf("released partition's last stored position = %+v, want 7, Stopped", pos)
	}
}
