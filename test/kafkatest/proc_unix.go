//go:build unix && !linux

package kafkatest

import "syscall"

// sysProcAttr puts the JVM in a process group of its own, so that a signal
// to the group reaches all of it. Unlike on Linux, a JVM may outlive a test
// binary that dies without running its cleanups.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
