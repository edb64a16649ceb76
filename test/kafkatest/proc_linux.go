package kafkatest

import "syscall"

// sysProcAttr puts the JVM in a process group of its own, so that a signal
// to the group reaches all of it, and has the kernel kill it if the test
// binary dies first (say, on a go test -timeout panic), so no JVM outlives
// its test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
