package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestHeapProfileAtNewHigh(t *testing.T) {
	path := filepath.Join(t.TempDir(), "heap.pprof")
	stop, err := startHeapProfile(path, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	hold := make([]byte, 2*heapProfileStep) // a new high
	for i := range hold {
		hold[i] = byte(i)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no heap profile written")
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	_ = hold[len(hold)-1]
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary file left: %v", err)
	}
}
