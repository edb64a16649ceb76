package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	const rev = "0123456789abcdef0123456789abcdef01234567"
	vcs := func(rev, modified string) []debug.BuildSetting {
		s := []debug.BuildSetting{{Key: "-trimpath", Value: "true"}, {Key: "vcs", Value: "git"}}
		if rev != "" {
			s = append(s, debug.BuildSetting{Key: "vcs.revision", Value: rev})
		}
		if modified != "" {
			s = append(s, debug.BuildSetting{Key: "vcs.modified", Value: modified})
		}
		return s
	}
	tests := []struct {
		name            string
		version, commit string // link-time values
		bi              *debug.BuildInfo
		wantVersion     string
		wantCommit      string
		wantGo          string
	}{
		{
			name: "link-time values win", version: "v1.2.3", commit: "abc1234",
			bi:          &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v9.9.9"}, Settings: vcs(rev, "true")},
			wantVersion: "v1.2.3", wantCommit: "abc1234", wantGo: "go1.26.8",
		},
		{
			name:        "go install module@version: module version, no VCS stamp",
			bi:          &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.4.0"}},
			wantVersion: "v1.4.0", wantCommit: UnknownCommit, wantGo: "go1.26.8",
		},
		{
			name:        "go build in a clean checkout",
			bi:          &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "false")},
			wantVersion: DevVersion, wantCommit: rev, wantGo: "go1.26.8",
		},
		{
			name:        "go build with uncommitted changes",
			bi:          &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "true")},
			wantVersion: DevVersion, wantCommit: rev + "-dirty", wantGo: "go1.26.8",
		},
		{
			name: "link-time version only: commit from the VCS stamp", version: "v2.0.0",
			bi:          &debug.BuildInfo{GoVersion: "go1.26.8", Settings: vcs(rev, "false")},
			wantVersion: "v2.0.0", wantCommit: rev, wantGo: "go1.26.8",
		},
		{
			name:        "no build information at all",
			wantVersion: DevVersion, wantCommit: UnknownCommit, wantGo: runtime.Version(),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			i := New(tc.version, tc.commit, tc.bi)
			if i.Version() != tc.wantVersion {
				t.Errorf("Version() = %q, want %q", i.Version(), tc.wantVersion)
			}
			if i.Commit() != tc.wantCommit {
				t.Errorf("Commit() = %q, want %q", i.Commit(), tc.wantCommit)
			}
			if i.GoVersion() != tc.wantGo {
				t.Errorf("GoVersion() = %q, want %q", i.GoVersion(), tc.wantGo)
			}
			if want := runtime.GOOS + "/" + runtime.GOARCH; i.Platform() != want {
				t.Errorf("Platform() = %q, want %q", i.Platform(), want)
			}
		})
	}
}

func TestString(t *testing.T) {
	plat := runtime.GOOS + "/" + runtime.GOARCH
	bi := &debug.BuildInfo{GoVersion: "go1.26.8"}
	tests := []struct {
		version, commit, want string
	}{
		{"v1.2.3", "abc1234", "kmirror v1.2.3 (commit abc1234, go1.26.8, " + plat + ")"},
		{"v1.2.3", "0123456789abcdef0123456789abcdef01234567", "kmirror v1.2.3 (commit 0123456789ab, go1.26.8, " + plat + ")"},
		{"v1.2.3", "0123456789abcdef0123456789abcdef01234567-dirty", "kmirror v1.2.3 (commit 0123456789ab-dirty, go1.26.8, " + plat + ")"},
		{"v1.2.3", "release-build-of-the-day", "kmirror v1.2.3 (commit release-build-of-the-day, go1.26.8, " + plat + ")"},
		{"", "", "kmirror dev (go1.26.8, " + plat + ")"},
	}
	for _, tc := range tests {
		if got := New(tc.version, tc.commit, bi).String(); got != tc.want {
			t.Errorf("New(%q, %q).String() = %q, want %q", tc.version, tc.commit, got, tc.want)
		}
	}
}

// TestRead checks the test binary's own build information: the go command
// records the Go version, and a test binary is "(devel)", so the version is
// "dev" unless set at link time.
func TestRead(t *testing.T) {
	i := Read("", "")
	if i.Version() != DevVersion {
		t.Errorf("Version() = %q, want %q for a test binary", i.Version(), DevVersion)
	}
	if !strings.HasPrefix(i.GoVersion(), "go") {
		t.Errorf("GoVersion() = %q, want go1.x", i.GoVersion())
	}
	if i := Read("v1.0.0", "feedbee"); i.Version() != "v1.0.0" || i.Commit() != "feedbee" {
		t.Errorf("Read(v1.0.0, feedbee) = %q, %q", i.Version(), i.Commit())
	}
}
