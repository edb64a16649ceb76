package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"time"
)

// heapProfileStep is how much the heap in use must grow past its last
// high before a new profile is written.
const heapProfileStep = 8 << 20

// startHeapProfile writes the in-use heap profile to path, for `go tool
// pprof -sample_index=inuse_space`, whenever the heap in use reaches a new
// high (by heapProfileStep), checked every interval: at the end it shows
// where the memory went at the run's peak. The file is replaced whole
// each time. stop ends it.
func startHeapProfile(path string, interval time.Duration) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("KMIRROR_HEAPPROFILE: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("KMIRROR_HEAPPROFILE: %w", err)
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(interval)
		defer t.Stop()
		var high uint64
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse >= high+heapProfileStep {
				high = ms.HeapInuse
				_ = writeHeapProfile(path) // the previous profile stays if this one fails
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); <-finished }, nil
}

// writeHeapProfile writes the heap profile to a file beside path and
// renames it into place.
func writeHeapProfile(path string) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
