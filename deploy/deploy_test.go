package deploy_test

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/kmirror/kmirror/internal/config"
)

// root is the repository root, relative to this package's directory.
const root = ".."

// TestStaticBuild runs scripts/build-static.sh, the Dockerfile's build step,
// and checks the binary it makes: statically linked, stripped, free of the
// build machine's paths, and reporting the version and commit it was given.
func TestStaticBuild(t *testing.T) {
	const (
		version = "v0.0.0-deploytest"
		commit  = "0123456789abcdef0123456789abcdef01234567"
	)
	out := t.TempDir()
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "build-static.sh"), out)
	cmd.Env = append(os.Environ(), "VERSION="+version, "COMMIT="+commit)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("build-static.sh: %v\n%s", err, stderr.String())
	}
	t.Logf("scripts/build-static.sh built the binary in %s", time.Since(start).Round(time.Millisecond))
	bin := filepath.Join(out, "kmirror")
	lines := strings.Split(strings.TrimSpace(string(stdout)), "\n")
	if last := lines[len(lines)-1]; last != bin {
		t.Errorf("build-static.sh printed %q last, want the binary's path %q", last, bin)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("binary has a %v program header: it is dynamically linked", p.Type)
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("binary needs shared libraries %v (err %v), want none (DT_NEEDED)", libs, err)
	}
	for _, name := range []string{".symtab", ".debug_info", ".zdebug_info"} {
		if f.Section(name) != nil {
			t.Errorf("binary has a %s section; -ldflags -s -w strips it", name)
		}
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(abs+"/internal/")) {
		t.Errorf("binary contains the build directory %s: built without -trimpath", abs)
	}
	fi, _ := os.Stat(bin)
	t.Logf("binary: %d bytes, static, stripped, no build paths", fi.Size())

	want := fmt.Sprintf("kmirror %s (commit %s, %s, %s/%s)\n", version, commit[:12], runtime.Version(), runtime.GOOS, runtime.GOARCH)
	for _, args := range [][]string{{"version"}, {"--version"}} {
		got, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("kmirror %s: %v\n%s", args[0], err, got)
		}
		if string(got) != want {
			t.Errorf("kmirror %s printed %q, want %q", args[0], got, want)
		}
	}
}

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
	line int
}

func parseDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, l := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(l)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if body, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args), start})
		cur.Reset()
	}
	if cur.Len() > 0 {
		t.Fatalf("%s: unterminated continuation at line %d", path, start)
	}
	return out
}

// shellWords splits a command line the way a POSIX shell does for the plain
// words, single and double quotes used here (no expansion).
func shellWords(t *testing.T, s string) []string {
	t.Helper()
	var words []string
	var w strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		case c == '\'' || c == '"':
			end := strings.IndexByte(s[i+1:], c)
			if end < 0 {
				t.Fatalf("unbalanced %c in %q", c, s)
			}
			w.WriteString(s[i+1 : i+1+end])
			i += end + 1
			inWord = true
		case c == '\\' && i+1 < len(s):
			w.WriteByte(s[i+1])
			i++
			inWord = true
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

// buildCommand normalizes a `go build` command line: it drops BuildKit's
// --mount options, the GOOS/GOARCH of a cross build and the output path,
// which may differ, and keeps everything that decides what is built.
func buildCommand(t *testing.T, line string) (cmd []string, output string) {
	t.Helper()
	words := shellWords(t, line)
	for i := 0; i < len(words); i++ {
		w := words[i]
		switch {
		case strings.HasPrefix(w, "--mount="), strings.HasPrefix(w, "GOOS="), strings.HasPrefix(w, "GOARCH="):
		case w == "-o" && i+1 < len(words):
			output = words[i+1]
			i++
		default:
			cmd = append(cmd, w)
		}
	}
	return cmd, output
}

// The build flags every release binary is built with. Both the Dockerfile
// and scripts/build-static.sh must use exactly these.
var wantBuild = []string{
	"CGO_ENABLED=0", "go", "build", "-trimpath",
	"-ldflags", "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}",
	"./cmd/kmirror",
}

// TestDockerfileBuildMatchesScript keeps the Dockerfile's build step and
// scripts/build-static.sh from drifting apart.
func TestDockerfileBuildMatchesScript(t *testing.T) {
	var docker []string
	var dockerOut string
	for _, in := range parseDockerfile(t, "Dockerfile") {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			if docker != nil {
				t.Fatalf("Dockerfile:%d: a second go build step", in.line)
			}
			docker, dockerOut = buildCommand(t, in.args)
		}
	}
	if docker == nil {
		t.Fatal("Dockerfile: no RUN step with go build")
	}

	data, err := os.ReadFile(filepath.Join(root, "scripts", "build-static.sh"))
	if err != nil {
		t.Fatal(err)
	}
	var script []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, "go build") && !strings.HasPrefix(strings.TrimSpace(l), "#") {
			if script != nil {
				t.Fatal("scripts/build-static.sh: a second go build line")
			}
			script, _ = buildCommand(t, l)
		}
	}
	if script == nil {
		t.Fatal("scripts/build-static.sh: no go build line")
	}

	if !slices.Equal(docker, script) {
		t.Fatalf("the Dockerfile and scripts/build-static.sh build differently:\nDockerfile: %q\nscript:     %q", docker, script)
	}
	if !slices.Equal(docker, wantBuild) {
		t.Fatalf("Dockerfile build step %q, want %q", docker, wantBuild)
	}
	if dockerOut != "/out/kmirror" {
		t.Errorf("Dockerfile builds into %q, want /out/kmirror (copied into the final stage)", dockerOut)
	}
	t.Logf("build step (Dockerfile = script): %s", strings.Join(docker, " "))
}

// TestDockerfile checks the image the Dockerfile describes: Go version of
// go.mod, distroless non-root base, numeric non-root user, entry point,
// command, port and labels.
func TestDockerfile(t *testing.T) {
	ins := parseDockerfile(t, "Dockerfile")
	var froms []instruction
	stage := -1 // index of the current stage
	final := map[string][]string{}
	args := map[int][]string{}
	for _, in := range ins {
		if in.cmd == "FROM" {
			froms = append(froms, in)
			stage++
			continue
		}
		if stage < 0 {
			continue
		}
		if in.cmd == "ARG" {
			args[stage] = append(args[stage], strings.SplitN(in.args, "=", 2)[0])
		}
		if stage == 1 {
			final[in.cmd] = append(final[in.cmd], in.args)
		}
	}
	if len(froms) != 2 {
		t.Fatalf("Dockerfile has %d stages, want 2 (build, final)", len(froms))
	}

	goMod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)(\.\d+)?$`).FindSubmatch(goMod)
	if m == nil {
		t.Fatal("go.mod: no go line")
	}
	if want := "--platform=$BUILDPLATFORM golang:" + string(m[1]) + " AS build"; froms[0].args != want {
		t.Errorf("Dockerfile:%d: FROM %s, want FROM %s (go.mod says go %s%s)", froms[0].line, froms[0].args, want, m[1], m[2])
	}
	for _, a := range []string{"VERSION", "COMMIT"} {
		if !slices.Contains(args[0], a) {
			t.Errorf("build stage: no ARG %s for the -X flags", a)
		}
	}
	if b := froms[1].args; b != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("final stage FROM %s, want gcr.io/distroless/static-debian12:nonroot (CA certificates, non-root user)", b)
	}

	check := func(cmd, want string) {
		t.Helper()
		got := final[cmd]
		if len(got) != 1 || got[0] != want {
			t.Errorf("final stage %s %q, want %s %s", cmd, got, cmd, want)
		}
	}
	check("USER", "65532:65532")
	check("EXPOSE", "9780")
	check("COPY", "--from=build /out/kmirror /kmirror")
	jsonArray := func(cmd string, want ...string) {
		t.Helper()
		var got []string
		if len(final[cmd]) != 1 || json.Unmarshal([]byte(final[cmd][0]), &got) != nil || !slices.Equal(got, want) {
			t.Errorf("final stage %s %q, want the JSON array %q", cmd, final[cmd], want)
		}
	}
	jsonArray("ENTRYPOINT", "/kmirror")
	jsonArray("CMD", "run", "--config", "/etc/kmirror/kmirror.yaml")
	labels := strings.Join(final["LABEL"], " ")
	for _, l := range []string{"title", "description", "source", "version", "revision"} {
		if !strings.Contains(labels, "org.opencontainers.image."+l+"=") {
			t.Errorf("final stage: no org.opencontainers.image.%s label", l)
		}
	}
}

// TestDockerContext checks that the build context the Dockerfile copies
// holds every package the binary needs, and that .dockerignore keeps the
// rest out.
func TestDockerContext(t *testing.T) {
	var copied []string
	for _, in := range parseDockerfile(t, "Dockerfile") {
		if in.cmd == "COPY" && !strings.HasPrefix(in.args, "--from=") {
			words := strings.Fields(in.args)
			for _, w := range words[:len(words)-1] {
				copied = append(copied, strings.TrimSuffix(w, "/"))
			}
		}
	}
	ignore := readDockerignore(t)
	for _, c := range copied {
		if slices.Contains(ignore, c) {
			t.Errorf(".dockerignore excludes %s, which the Dockerfile copies", c)
		}
	}
	for _, must := range []string{".git", ".cache", "bench", "test"} {
		if !slices.Contains(ignore, must) {
			t.Errorf(".dockerignore does not exclude %s", must)
		}
	}

	cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", "./cmd/kmirror")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		rel, err := filepath.Rel(abs, sc.Text())
		if err != nil || strings.HasPrefix(rel, "..") {
			continue // a dependency from the module cache
		}
		n++
		top := strings.Split(filepath.ToSlash(rel), "/")[0]
		if !slices.Contains(copied, top) {
			t.Errorf("cmd/kmirror needs %s, which the Dockerfile does not copy (it copies %v)", rel, copied)
		}
	}
	t.Logf("the Dockerfile copies %v: all %d packages of the module that cmd/kmirror needs", copied, n)
}

func readDockerignore(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, strings.TrimSuffix(l, "/"))
		}
	}
	return out
}

// unit is a parsed systemd unit: section → key → values in order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unit{}
	section := ""
	for i, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";"):
		case strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]"):
			section = l[1 : len(l)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value in a section: %q", path, i+1, l)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// TestSystemdUnit checks the settings the unit exists for, and runs
// systemd-analyze verify and security on it when systemd-analyze is there.
func TestSystemdUnit(t *testing.T) {
	const path = "systemd/kmirror.service"
	u := parseUnit(t, path)
	want := []struct{ section, key, value string }{
		{"Unit", "After", "network-online.target"},
		{"Unit", "Wants", "network-online.target"},
		{"Service", "ExecStart", "/usr/local/bin/kmirror run --config /etc/kmirror/kmirror.yaml"},
		{"Service", "User", "kmirror"},
		{"Service", "EnvironmentFile", "-/etc/kmirror/kmirror.env"},
		{"Service", "Restart", "on-failure"},
		{"Service", "RestartPreventExitStatus", "2"},
		{"Service", "KillSignal", "SIGTERM"},
		{"Service", "NoNewPrivileges", "yes"},
		{"Service", "ProtectSystem", "strict"},
		{"Service", "ProtectHome", "yes"},
		{"Service", "PrivateTmp", "yes"},
		{"Service", "CapabilityBoundingSet", ""},
		{"Install", "WantedBy", "multi-user.target"},
	}
	for _, w := range want {
		if got := u[w.section][w.key]; len(got) != 1 || got[0] != w.value {
			t.Errorf("[%s] %s=%q, want %q", w.section, w.key, got, w.value)
		}
	}
	// kmirror drains writes in flight for up to 15 s on SIGTERM, then stores
	// its progress: systemd must wait longer than that before SIGKILL.
	stop := u["Service"]["TimeoutStopSec"]
	if len(stop) != 1 {
		t.Fatalf("TimeoutStopSec=%q, want one value", stop)
	}
	d, err := time.ParseDuration(stop[0])
	if err != nil {
		t.Fatalf("TimeoutStopSec=%s: %v", stop[0], err)
	}
	if d < 30*time.Second {
		t.Errorf("TimeoutStopSec=%s, want at least 30s (15 s drain, then progress)", d)
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Logf("systemd-analyze not found: checked the unit's settings only")
		return
	}
	// verify also checks that ExecStart's program exists: point it at an
	// executable that does.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(t.TempDir(), "kmirror.service")
	if err := os.WriteFile(tmp, bytes.ReplaceAll(data, []byte("/usr/local/bin/kmirror"), []byte(exe)), 0o644); err != nil {
		t.Fatal(err)
	}
	// verify exits 0 on unknown keys but says so: any output is a finding.
	out, err := exec.Command(analyze, "verify", tmp).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: exit %v\n%s", err, out)
	}
	out, err = exec.Command(analyze, "security", "--offline=true", tmp).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for kmirror.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security printed no exposure level:\n%s", out)
	}
	level, _ := strconv.ParseFloat(string(m[1]), 64)
	if level > 2.0 {
		t.Errorf("systemd-analyze security: exposure %.1f, want at most 2.0 (0 is best, 10 worst)", level)
	}
	t.Logf("systemd-analyze verify: clean; security exposure %.1f of 10", level)
}

// TestChartConfigs loads the configurations the Helm chart's tests and
// values-full.yaml use, with the http.listen the chart adds, through
// kmirror's own configuration loader: they must be valid kmirror
// configurations, and "[${POD_IP}]:port" must work for IPv4 and IPv6 pods.
func TestChartConfigs(t *testing.T) {
	const listen = "[${POD_IP}]:9780"
	withListen := func(t *testing.T, cfg map[string]any) []byte {
		t.Helper()
		http, _ := cfg["http"].(map[string]any)
		if http == nil {
			http = map[string]any{}
		}
		http["listen"] = listen
		cfg["http"] = http
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	readYAML := func(t *testing.T, path string) map[string]any {
		t.Helper()
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := yaml.Unmarshal(data, &v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return v
	}

	minimal := withListen(t, readYAML(t, "helm/validate/testdata/kmirror.yaml"))
	for _, ip := range []string{"10.1.2.3", "fd00::1"} {
		env := map[string]string{"POD_IP": ip, "DR_BOOTSTRAP": "dr:9092", "DR_PASSWORD": "secret"}
		cfg, err := config.Parse("kmirror.yaml", minimal, lookup(env))
		if err != nil {
			t.Fatalf("POD_IP=%s: %v", ip, err)
		}
		if want := "[" + ip + "]:9780"; cfg.HTTP.Listen != want {
			t.Errorf("POD_IP=%s: http.listen %q, want %q", ip, cfg.HTTP.Listen, want)
		}
	}
	// The bracketed form binds for an IPv4 address too.
	ln, err := net.Listen("tcp", "[127.0.0.1]:0")
	if err != nil {
		t.Fatalf("listen on [127.0.0.1]:0: %v", err)
	}
	ln.Close()

	// values-full.yaml: its secret files live under /var/run/secrets/kmirror
	// in the pod; here, in a temporary directory.
	full := readYAML(t, "helm/kmirror/values-full.yaml")
	cfgYAML := withListen(t, full["config"].(map[string]any))
	dir := t.TempDir()
	cfgYAML = bytes.ReplaceAll(cfgYAML, []byte("/var/run/secrets/kmirror/"), []byte(dir+"/"))
	for _, m := range regexp.MustCompile(regexp.QuoteMeta(dir)+`/[^\s"']+`).FindAll(cfgYAML, -1) {
		if err := os.MkdirAll(filepath.Dir(string(m)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(string(m), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{"POD_IP": "10.1.2.3", "DR_PASSWORD": "secret", "KMIRROR_ADMIN_TOKEN": "0123456789abcdef0123"}
	for _, e := range full["env"].([]any) {
		e := e.(map[string]any)
		env[e["name"].(string)] = e["value"].(string)
	}
	cfg, err := config.Parse("kmirror.yaml", cfgYAML, lookup(env))
	if err != nil {
		t.Fatalf("values-full.yaml's configuration: %v", err)
	}
	if cfg.HTTP.Listen != "[10.1.2.3]:9780" || len(cfg.Flows) != 1 || len(cfg.Clusters) != 2 {
		t.Errorf("values-full.yaml's configuration: listen %q, %d flows, %d clusters", cfg.HTTP.Listen, len(cfg.Flows), len(cfg.Clusters))
	}
	t.Logf("chart configurations load: minimal (IPv4 and IPv6 pod IPs), values-full.yaml (%d clusters, %d flow)", len(cfg.Clusters), len(cfg.Flows))
}

func lookup(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}
