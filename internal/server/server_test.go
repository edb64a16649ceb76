package server

import (
	"testing"

	"github.com/kmirror/kmirror/internal/flow"
	"github.com/kmirror/kmirror/internal/ownership"
)

func TestNotReadyReason(t *testing.T) {
	tests := []struct {
		name string
		st   flow.Status
		want string
	}{
		{"cluster down", flow.Status{Name: "a", SourceUp: true},
			"flow a: source_up=true target_up=false"},
		{"waiting for the holder", flow.Status{Name: "a", Owner: &ownership.State{Holder: &ownership.Identity{Instance: "h:1", Host: "h", PID: 1}}},
			"flow a: waiting; another instance holds the flow (h:1 (host h, pid 1))"},
		{"waiting, holder unknown", flow.Status{Name: "a", Owner: &ownership.State{}},
			"flow a: waiting; another instance holds the flow (no instance yet)"},
		{"holding but a cluster down", flow.Status{Name: "a", TargetUp: true, Owner: &ownership.State{Holding: true}},
			"flow a: source_up=false target_up=true"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := notReadyReason(tc.st); got != tc.want {
				t.Fatalf("notReadyReason = %q, want %q", got, tc.want)
			}
		})
	}
}
