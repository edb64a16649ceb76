// Package membudget sizes kmirror's memory. It finds the memory the
// process may use (memory_limit, GOMEMLIMIT, the cgroup's limit or a share
// of the machine's RAM) and splits it among the flows: each flow's fetch
// buffers, produce buffer, record batch decompression and the comparisons
// of target records at restart get a part, and the client settings that
// keep them there are derived from it (see Split).
//
// The package reads files and computes; it changes nothing in the
// process: the caller sets Go's memory limit and applies the settings.
package membudget

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path"
	"strconv"
	"strings"
)

// Where a limit comes from.
const (
	SourceConfig     = "memory_limit"
	SourceGOMEMLIMIT = "GOMEMLIMIT"
	SourceCgroupV2   = "cgroup v2 memory.max"
	SourceCgroupV1   = "cgroup v1 memory.limit_in_bytes"
	SourceRAM        = "RAM"
)

// Shares of a detected limit that kmirror takes by default: most of its
// cgroup's limit (the rest is for memory Go does not manage: thread
// stacks outside the heap, the kernel's socket buffers charged to the
// cgroup), and a quarter of the machine's RAM when no cgroup limits it,
// as the JVM takes for its heap by default.
const (
	CgroupPercent = 90
	RAMPercent    = 25
)

// Limit is the memory kmirror may use, and where that figure came from.
type Limit struct {
	Bytes  int64
	Source string // SourceConfig, SourceGOMEMLIMIT, SourceCgroupV2, SourceCgroupV1 or SourceRAM
	// Found is the figure Source holds (the cgroup's limit, the RAM),
	// of which Bytes is a share; equal to Bytes for memory_limit and
	// GOMEMLIMIT.
	Found int64
	// Path is the file the figure was read from, if any.
	Path string
}

// String describes l for a log line: "512 MiB (memory_limit)",
// "921.6 MiB (90% of cgroup v2 memory.max 1 GiB)".
func (l Limit) String() string {
	if l.Found != l.Bytes {
		return fmt.Sprintf("%s (%d%% of %s %s)", size(l.Bytes), (l.Bytes*100+l.Found/2)/max(l.Found, 1), l.Source, size(l.Found))
	}
	return fmt.Sprintf("%s (%s)", size(l.Bytes), l.Source)
}

// Resolve picks the limit the budget is split from. In order: configured
// (memory_limit, >0 when set); goMemLimit, Go's memory limit when the
// GOMEMLIMIT environment variable set it (0 when not set or "off"); the
// limit detect finds. It also reports whether the caller should set Go's
// memory limit to it: not when GOMEMLIMIT is set, which wins for the Go
// runtime whatever memory_limit says.
func Resolve(configured, goMemLimit int64, detect func() (Limit, error)) (Limit, bool, error) {
	setGo := goMemLimit <= 0
	switch {
	case configured > 0:
		return Limit{Bytes: configured, Found: configured, Source: SourceConfig}, setGo, nil
	case goMemLimit > 0:
		return Limit{Bytes: goMemLimit, Found: goMemLimit, Source: SourceGOMEMLIMIT}, false, nil
	}
	l, err := detect()
	return l, setGo, err
}

// Detect finds the memory limit of the process from the file system fsys,
// rooted at "/" (os.DirFS("/")): the lowest limit of its cgroup and the
// cgroups above it, v2 (memory.max) or v1 (memory.limit_in_bytes), of
// which it takes CgroupPercent; without one, RAMPercent of the machine's
// RAM (MemTotal in /proc/meminfo).
func Detect(fsys fs.FS) (Limit, error) {
	if l, ok := cgroupLimit(fsys); ok {
		return l, nil
	}
	ram, err := memTotal(fsys)
	if err != nil {
		return Limit{}, fmt.Errorf("finding the memory limit (no cgroup limit found): %w; set memory_limit", err)
	}
	return Limit{Bytes: ram * RAMPercent / 100, Found: ram, Source: SourceRAM, Path: "/proc/meminfo"}, nil
}

// cgroupLimit returns CgroupPercent of the lowest memory limit of the
// process's cgroups, v2 and v1, and false if none is set.
func cgroupLimit(fsys fs.FS) (Limit, bool) {
	groups, err := readCgroups(fsys)
	if err != nil {
		return Limit{}, false
	}
	mounts, err := readMounts(fsys)
	if err != nil {
		return Limit{}, false
	}
	var best Limit
	for _, m := range mounts {
		var group, file, source string
		switch {
		case m.fsType == "cgroup2":
			g, ok := groups[""]
			if !ok {
				continue
			}
			group, file, source = g, "memory.max", SourceCgroupV2
		case m.fsType == "cgroup" && m.hasOption("memory"):
			g, ok := groups["memory"]
			if !ok {
				continue
			}
			group, file, source = g, "memory.limit_in_bytes", SourceCgroupV1
		default:
			continue
		}
		n, at, ok := lowestLimit(fsys, m, group, file)
		if ok && (best.Found == 0 || n < best.Found) {
			best = Limit{Found: n, Source: source, Path: at}
		}
	}
	if best.Found == 0 {
		return Limit{}, false
	}
	best.Bytes = best.Found / 100 * CgroupPercent
	return best, true
}

// unlimited is the smallest value read as "no limit": cgroup v1 writes
// the largest page-aligned int64 for it.
const unlimited = 1 << 62

// lowestLimit reads file in the directory of group under mount m and in
// every directory above it up to the mount's root, and returns the
// lowest limit set and the file it was read from. A group outside the
// mount's root (a mount of a cgroup namespace's own root, seen from
// outside it) is read at the mount's root alone.
func lowestLimit(fsys fs.FS, m mount, group, file string) (int64, string, bool) {
	rel, ok := strings.CutPrefix(group, m.root)
	if !ok || (m.root != "/" && rel != "" && !strings.HasPrefix(rel, "/")) {
		rel = ""
	}
	dir := path.Join(m.point, rel)
	var low int64
	var at string
	for {
		f := path.Join(dir, file)
		if n, ok := readLimit(fsys, f); ok && (low == 0 || n < low) {
			low, at = n, "/"+f
		}
		if dir == m.point || !strings.HasPrefix(dir, m.point+"/") {
			break
		}
		dir = path.Dir(dir)
	}
	return low, at, low > 0
}

// readLimit reads a cgroup memory limit file: bytes, or "max" (v2) or a
// huge number (v1) for none.
func readLimit(fsys fs.FS, name string) (int64, bool) {
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		return 0, false
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 || n >= unlimited {
		return 0, false
	}
	return int64(n), true
}

// readCgroups reads /proc/self/cgroup: the process's cgroup path by
// controller ("" for the v2 hierarchy, "memory" for v1's).
func readCgroups(fsys fs.FS) (map[string]string, error) {
	b, err := fs.ReadFile(fsys, "proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			out[""] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "memory" {
				out["memory"] = parts[2]
			}
		}
	}
	return out, sc.Err()
}

// mount is a cgroup file system mount from /proc/self/mountinfo.
type mount struct {
	root    string // the cgroup path mounted
	point   string // where, without the leading "/"
	fsType  string
	options []string // super options
}

func (m mount) hasOption(o string) bool {
	for _, x := range m.options {
		if x == o {
			return true
		}
	}
	return false
}

// readMounts reads the cgroup and cgroup2 mounts of /proc/self/mountinfo.
func readMounts(fsys fs.FS) ([]mount, error) {
	b, err := fs.ReadFile(fsys, "proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []mount
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// id parent major:minor root mount-point options [optional...] - type source super-options
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) {
			continue
		}
		typ := fields[sep+1]
		if typ != "cgroup" && typ != "cgroup2" {
			continue
		}
		m := mount{root: unescape(fields[3]), point: strings.TrimPrefix(unescape(fields[4]), "/"), fsType: typ}
		if sep+3 < len(fields) {
			m.options = strings.Split(fields[sep+3], ",")
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// memTotal reads the machine's RAM from /proc/meminfo.
func memTotal(fsys fs.FS) (int64, error) {
	b, err := fs.ReadFile(fsys, "proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			break
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb <= 0 || kb > math.MaxInt64/1024 {
			break
		}
		return kb * 1024, nil
	}
	return 0, errors.New("/proc/meminfo has no MemTotal in kB")
}
