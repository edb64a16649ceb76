package kafkatest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
)

// A JVM starting up, the storage tool's or a broker's until it answers,
// keeps a core busy for seconds. Tests that start many clusters at once
// (parallel tests, several packages under go test ./...) would have them
// all compete for the CPU and each take minutes, past readyTimeout, on a
// small machine. So at most launchSlots JVMs start at once on the machine:
// in the process a channel admits them in turn, and between processes a
// lock file (flock) per slot in the temporary directory does. A launch's
// timeouts run from the moment it holds a slot.

// launchSlots is the number of JVMs that may start at once.
var launchSlots = max(2, runtime.NumCPU())

var localSlots = make(chan struct{}, launchSlots)

// acquireSlot waits for a launch slot and returns the function that
// releases it and how long it waited. Where the lock files cannot be
// used, only the process's own launches are bounded.
func acquireSlot() (release func(), waited time.Duration) {
	begin := time.Now()
	localSlots <- struct{}{}
	local := func() { <-localSlots }
	dir := filepath.Join(os.TempDir(), "kmirror-kafkatest-launch")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return local, time.Since(begin)
	}
	for {
		for i := range launchSlots {
			f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("slot-%d", i)), os.O_CREATE|os.O_RDWR, 0o666)
			if err != nil {
				return local, time.Since(begin)
			}
			if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
				return func() { f.Close(); local() }, time.Since(begin) // closing releases the lock
			}
			f.Close()
		}
		time.Sleep(50 * time.Millisecond)
	}
}
