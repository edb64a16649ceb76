package groupsync

import (
	"context"
	"testing"
	"time"

	"github.com/kmirror/kmirror/internal/kfaketest"
)

func TestCheckpointsLoadNewest(t *testing.T) {
	cl := kfaketest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := NewStore(cl, "__kmirror.f.checkpoints")
	if got, err := s.Load(ctx); err != nil || len(got) != 0 {
		t.Fatalf("missing topic: %+v, %v", got, err)
	}
	if err := s.Ensure(ctx, 0); err != nil {
		t.Fatal(err)
	}
	writes := [][]Checkpoint{
		{{Group: "g", Topic: "a", Partition: 1, SourceOffset: 5}, {Group: "g", Topic: "a", Partition: 0, SourceOffset: 3}},
		{{Group: "g", Topic: "a", Partition: 1, SourceOffset: 9, TargetOffset: 7, Exact: true}, {Group: "b", Topic: "a", Partition: 0, SourceOffset: 1}},
	}
	for _, w := range writes {
		if err := s.Write(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []Checkpoint{
		{Group: "b", Topic: "a", Partition: 0, SourceOffset: 1},
		{Group: "g", Topic: "a", Partition: 0, SourceOffset: 3},
		{Group: "g", Topic: "a", Partition: 1, SourceOffset: 9, TargetOffset: 7, Exact: true},
	}
	if len(got) != len(want) {
		t.Fatalf("loaded %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("checkpoint %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}
