package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// sampleInterval is how often a child process's CPU and memory are read
// from /proc.
const sampleInterval = 200 * time.Millisecond

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// proc is a child process leading its own process group, its output
// appended to a log file, its CPU time and memory sampled from /proc every
// sampleInterval while it runs.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	started time.Time
	done    chan struct{} // closed once the process exited and was reaped
	err     error         // cmd.Wait's result; read after done

	mu      sync.Mutex
	samples []sample
}

// sample is one reading of /proc/<pid>.
type sample struct {
	at  time.Time
	cpu time.Duration // user + system CPU time so far
	rss int64         // resident set size (VmRSS), bytes
	hwm int64         // peak resident set size so far (VmHWM), bytes
}

// startProc starts path with args, in its own process group, killed by the
// kernel if the bench dies, stdout and stderr appended to logPath. env, if
// not nil, is added to the bench's environment.
func startProc(name, logPath string, env []string, path string, args ...string) (*proc, error) {
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("starting %s: opening its log: %w", name, err)
	}
	defer log.Close() // the child has its own descriptor
	fmt.Fprintf(log, "=== bench: %s %s (%s) ===\n", path, strings.Join(args, " "), time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(path, args...)
	cmd.Stdout = log
	cmd.Stderr = log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	go p.sampleLoop()
	return p, nil
}

// pid is the process id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes how the process ended, quoting the end of its log,
// or returns nil while it runs.
func (p *proc) exitError() error {
	if !p.exited() {
		return nil
	}
	return fmt.Errorf("%s exited unexpectedly (%w); end of %s:\n%s", p.name, p.err, p.logPath, tail(p.logPath, 25))
}

func (p *proc) sampleLoop() {
	t := time.NewTicker(sampleInterval)
	defer t.Stop()
	for {
		p.sampleNow()
		select {
		case <-p.done:
			return
		case <-t.C:
		}
	}
}

// sampleNow reads /proc once and records the sample; it does nothing once
// the process has exited.
func (p *proc) sampleNow() {
	if p.exited() {
		return
	}
	s, err := readProc(p.pid())
	if err != nil {
		return // exiting
	}
	p.mu.Lock()
	p.samples = append(p.samples, s)
	p.mu.Unlock()
}

// readProc reads the CPU time and memory of process pid.
func readProc(pid int) (sample, error) {
	s := sample{at: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("reading /proc/%d/stat: %w", pid, err)
	}
	// The command name (field 2) may hold spaces and parentheses: the
	// fields after it start after its last ')'. utime and stime are
	// fields 14 and 15, that is 11th and 12th after the name.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: %d fields after the name", pid, len(fields))
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("/proc/%d/stat: bad utime or stime", pid)
	}
	s.cpu = time.Duration(utime+stime) * time.Second / clockTicks

	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("reading /proc/%d/status: %w", pid, err)
	}
	for line := range strings.Lines(string(status)) {
		key, val, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(val) // "123456 kB"
		if len(f) == 0 {
			continue
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		if key == "VmRSS" {
			s.rss = kb << 10
		} else {
			s.hwm = kb << 10
		}
	}
	return s, nil
}

// cpuAt estimates the process's CPU time at t, interpolating between the
// samples around it.
func (p *proc) cpuAt(t time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	ss := p.samples
	if len(ss) == 0 {
		return 0
	}
	i, _ := slices.BinarySearchFunc(ss, t, func(s sample, t time.Time) int { return s.at.Compare(t) })
	switch {
	case i == 0:
		return ss[0].cpu
	case i == len(ss):
		return ss[len(ss)-1].cpu
	}
	a, b := ss[i-1], ss[i]
	span := b.at.Sub(a.at)
	if span <= 0 {
		return b.cpu
	}
	frac := float64(t.Sub(a.at)) / float64(span)
	return a.cpu + time.Duration(frac*float64(b.cpu-a.cpu))
}

// usage is a process's resource use over a period.
type usage struct {
	cpu     time.Duration // CPU time used in the period
	wall    time.Duration // length of the period
	peakRSS int64         // largest VmHWM seen up to the end of the period
	lastRSS int64         // VmRSS at the end of the period
}

// cores is the average number of cores busy over the period.
func (u usage) cores() float64 {
	if u.wall <= 0 {
		return 0
	}
	return u.cpu.Seconds() / u.wall.Seconds()
}

// usageBetween returns the process's resource use from t0 to t1.
func (p *proc) usageBetween(t0, t1 time.Time) usage {
	u := usage{cpu: p.cpuAt(t1) - p.cpuAt(t0), wall: t1.Sub(t0)}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.samples {
		if s.at.After(t1.Add(sampleInterval)) {
			break
		}
		u.peakRSS = max(u.peakRSS, s.hwm, s.rss)
		u.lastRSS = s.rss
	}
	return u
}

// stop sends SIGTERM to the process group and waits for the process to
// exit, sending SIGKILL after grace. It reports whether the process exited
// on SIGTERM within grace.
func (p *proc) stop(grace time.Duration) bool {
	if p.exited() {
		return true
	}
	p.sampleNow()
	_ = killGroup(p.pid(), syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(grace):
		_ = killGroup(p.pid(), syscall.SIGKILL)
		<-p.done
		return false
	}
}

// tail returns about the last n lines of the file at path.
func tail(path string, n int) string {
	const maxBytes = 32 << 10
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > maxBytes {
		if _, err := f.Seek(-maxBytes, io.SeekEnd); err != nil {
			return fmt.Sprintf("(reading the log: %v)", err)
		}
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(reading the log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logProblems summarizes the warnings and errors in a replicator's log:
// how many lines, and the first one.
func logProblems(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	var n int
	var first string
	for line := range strings.Lines(string(data)) {
		if !strings.Contains(line, "level=ERROR") && !strings.Contains(line, "level=WARN") &&
			!strings.Contains(line, "] ERROR ") && !strings.Contains(line, "] WARN ") {
			continue
		}
		n++
		if first == "" {
			first = strings.TrimSpace(line)
		}
	}
	if n == 0 {
		return "no warning or error in its log"
	}
	if len(first) > 400 {
		first = first[:400] + "…"
	}
	return fmt.Sprintf("%d warning or error lines in its log; the first: %s", n, first)
}
