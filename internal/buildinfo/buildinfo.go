// Package buildinfo says which kmirror is running: its version, the commit it
// was built from, and the Go toolchain and platform it was built with.
//
// Release builds set the version and commit at link time (see
// scripts/build-static.sh and deploy/Dockerfile):
//
//	go build -ldflags "-X main.version=v1.2.3 -X main.commit=abc1234" ./cmd/kmirror
//
// and pass them to [Read]. Without them, the module version recorded by
// `go install module@version` and the VCS stamp of a build from a git checkout
// (vcs.revision, vcs.modified) are used; failing both, the version is "dev".
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Defaults when nothing better is known.
const (
	DevVersion    = "dev"
	UnknownCommit = "unknown"
)

// shortCommit is how many characters of a commit hash String shows.
const shortCommit = 12

// Info describes one build. The zero value is not useful; use Read or New.
type Info struct {
	version   string
	commit    string
	goVersion string
	platform  string
}

// Read returns the running binary's build information. version and commit
// are the values set at link time with -X; empty means not set.
func Read(version, commit string) Info {
	bi, _ := debug.ReadBuildInfo() // nil when the binary has none
	return New(version, commit, bi)
}

// New combines the link-time version and commit (empty when not set) with
// the build information bi recorded by the Go toolchain (nil when there is
// none). Link-time values win; then bi's module version and VCS stamp; then
// DevVersion and UnknownCommit.
func New(version, commit string, bi *debug.BuildInfo) Info {
	info := Info{
		version:   version,
		commit:    commit,
		goVersion: runtime.Version(),
		platform:  runtime.GOOS + "/" + runtime.GOARCH,
	}
	if bi != nil {
		if info.version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.version = bi.Main.Version
		}
		if info.commit == "" {
			info.commit = vcsCommit(bi.Settings)
		}
		if bi.GoVersion != "" {
			info.goVersion = bi.GoVersion
		}
	}
	if info.version == "" {
		info.version = DevVersion
	}
	if info.commit == "" {
		info.commit = UnknownCommit
	}
	return info
}

// vcsCommit returns the revision stamped by the go command, with "-dirty"
// when the work tree had uncommitted changes, or "" when there is none.
func vcsCommit(settings []debug.BuildSetting) string {
	var rev string
	var modified bool
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return ""
	}
	if modified {
		rev += "-dirty"
	}
	return rev
}

// Version is the release version, such as "v1.2.3", or "dev".
func (i Info) Version() string { return i.version }

// Commit is the commit the binary was built from, possibly with a "-dirty"
// suffix, or "unknown".
func (i Info) Commit() string { return i.commit }

// GoVersion is the Go toolchain that built the binary, such as "go1.26.8".
func (i Info) GoVersion() string { return i.goVersion }

// Platform is the operating system and architecture, such as "linux/amd64".
func (i Info) Platform() string { return i.platform }

// String is the one line `kmirror version` prints:
//
//	kmirror v1.2.3 (commit abc1234def56, go1.26.8, linux/amd64)
//
// A commit hash is shortened to 12 characters (its "-dirty" suffix kept); an
// unknown commit is left out.
func (i Info) String() string {
	if i.commit == UnknownCommit {
		return fmt.Sprintf("kmirror %s (%s, %s)", i.version, i.goVersion, i.platform)
	}
	return fmt.Sprintf("kmirror %s (commit %s, %s, %s)", i.version, short(i.commit), i.goVersion, i.platform)
}

// short cuts a hexadecimal commit hash to shortCommit characters, keeping a
// "-dirty" suffix; anything else (a tag, a short hash) is returned as it is.
func short(commit string) string {
	hash, suffix := commit, ""
	if h, ok := strings.CutSuffix(commit, "-dirty"); ok {
		hash, suffix = h, "-dirty"
	}
	if len(hash) <= shortCommit || !isHex(hash) {
		return commit
	}
	return hash[:shortCommit] + suffix
}

func isHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}
