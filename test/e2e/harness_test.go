// Package e2e tests kmirror end to end against real Apache Kafka brokers
// (see test/kafkatest). The kmirror binary is built once and run as its own
// process, exactly as a user runs it.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/provenance"
	"github.com/kmirror/kmirror/internal/replicate"
	"github.com/kmirror/kmirror/internal/verify"
	"github.com/kmirror/kmirror/test/kafkatest"
)

// kmirrorBin is the binary under test, built by TestMain.
var kmirrorBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kmirror-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	kmirrorBin = filepath.Join(dir, "kmirror")
	build := exec.Command("go", "build", "-o", kmirrorBin, "github.com/kmirror/kmirror/cmd/kmirror")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building kmirror:", err)
		os.Exit(1)
	}
	flag.Parse()
	defaultParallel()
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// parallelTests is how many tests marked t.Parallel run at once unless
// -parallel says otherwise. go test's default, GOMAXPROCS, is 2 on a
// 2-core machine, but these tests spend most of their time waiting on
// brokers, timers and other processes, not on CPU.
const parallelTests = 4

// defaultParallel sets -test.parallel to parallelTests unless it was given.
func defaultParallel() {
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	if !given && flag.Lookup("test.parallel") != nil {
		if err := flag.Set("test.parallel", strconv.Itoa(parallelTests)); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: -parallel:", err)
			os.Exit(1)
		}
	}
}

// pair is a source and a target cluster with clients for both.
type pair struct {
	src, dst     *kafkatest.Cluster
	srcCl, dstCl *kgo.Client
}

// startPair starts two Kafka clusters side by side.
func startPair(t *testing.T) *pair {
	t.Helper()
	kafkatest.RequireLibs(t) // skips or fails here, not in a goroutine below
	var src, dst *kafkatest.Cluster
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); src = kafkatest.Start(t, kafkatest.Options{Name: "source"}) }()
	dst = kafkatest.Start(t, kafkatest.Options{Name: "target"})
	wg.Wait()
	if src == nil || t.Failed() {
		t.FailNow()
	}
	return &pair{src: src, dst: dst, srcCl: newClient(t, src.Bootstrap()), dstCl: newClient(t, dst.Bootstrap())}
}

func newClient(t *testing.T, bootstrap string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(bootstrap),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchMaxBytes(4 << 20),
		// Metadata answers are cached for 5 s by default, which would hide
		// a topic created in the meantime.
		kgo.MetadataMinAge(100 * time.Millisecond),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func createTopic(t *testing.T, cl *kgo.Client, name string, partitions int32, configs map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs := map[string]*string{}
	for k, v := range configs {
		cs[k] = kadm.StringPtr(v)
	}
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, partitions, 1, cs, name); err != nil {
		t.Fatalf("creating topic %q: %v", name, err)
	}
	// The controller answers before the broker hosts the partitions: a
	// produce right away can fail with UNKNOWN_TOPIC_OR_PARTITION on a
	// busy machine. Wait until every partition has a leader.
	for {
		md, err := adm.Metadata(ctx, name)
		if err == nil {
			if td := md.Topics[name]; td.Err == nil && len(td.Partitions) > 0 && (partitions < 0 || len(td.Partitions) == int(partitions)) && allLed(td.Partitions) {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("topic %q created, but its partitions have no leader yet: %v", name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// allLed reports whether every partition has a leader.
func allLed(parts kadm.PartitionDetails) bool {
	for _, p := range parts {
		if p.Leader < 0 || p.Err != nil {
			return false
		}
	}
	return true
}

func produce(t *testing.T, cl *kgo.Client, recs []*kgo.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("producing %d records: %v", len(recs), err)
	}
}

// freeAddr returns a loopback address with a port free at the time.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// writeConfig writes a config file into the test's directory.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kmirror.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// flowConfig is a one-flow config between the pair, with extra flow keys.
// Heartbeats are off unless flowExtra sets heartbeat_interval: most tests
// count the records and topics on the target, which heartbeats would add
// to (status_test.go tests them).
func (p *pair) flowConfig(httpAddr, flowExtra string) string {
	if !strings.Contains(flowExtra, "heartbeat_interval") {
		flowExtra += "\nheartbeat_interval: off"
	}
	return fmt.Sprintf(`clusters:
  src:
    bootstrap_servers: [%q]
  dst:
    bootstrap_servers: [%q]
flows:
  - name: e2e
    source: src
    target: dst
%s
http:
  listen: %q
`, p.src.Bootstrap(), p.dst.Bootstrap(), indent(flowExtra, "    "), httpAddr)
}

func indent(s, prefix string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l != "" {
			b.WriteString(prefix + l + "\n")
		}
	}
	return b.String()
}

// procEnv holds, by test name, the variables setEnv added to the
// environment of the processes the test starts.
var procEnv sync.Map // string → []string ("KEY=value")

// setEnv adds key=value to the environment of every kmirror process that
// the test and its subtests start, and to no one else's: unlike t.Setenv,
// which changes the test binary's own environment, it leaves the test free
// to run in parallel with others.
func setEnv(t *testing.T, key, value string) {
	t.Helper()
	name := t.Name()
	var env []string
	if e, ok := procEnv.Load(name); ok {
		env = e.([]string)
	}
	procEnv.Store(name, slices.Concat(env, []string{key + "=" + value}))
	t.Cleanup(func() { procEnv.Delete(name) })
}

// command returns an exec.Cmd running the kmirror binary with args, with
// the variables setEnv gave the test or the tests it is a subtest of.
func command(ctx context.Context, t *testing.T, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, kmirrorBin, args...)
	var env []string
	for name := t.Name(); ; {
		if e, ok := procEnv.Load(name); ok {
			env = slices.Concat(e.([]string), env)
		}
		i := strings.LastIndexByte(name, '/')
		if i < 0 {
			break
		}
		name = name[:i]
	}
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	return cmd
}

// proc is a kmirror process.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	http string
	done chan struct{}
	mu   sync.Mutex
	logs bytes.Buffer
}

// startKmirror runs `kmirror run --config path [extra...]` and returns at
// once; the process is killed when the test ends.
func startKmirror(t *testing.T, path, httpAddr string, extra ...string) *proc {
	t.Helper()
	p := &proc{t: t, http: httpAddr, done: make(chan struct{})}
	p.cmd = command(context.Background(), t, append([]string{"run", "--config", path}, extra...)...)
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting kmirror: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.logs.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	go func() {
		_ = p.cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("kmirror output:\n%s", p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits up to 30 s for a clean exit.
func (p *proc) stop() {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Errorf("kmirror did not stop within 30s of SIGTERM")
		p.kill()
	}
}

// get fetches a path of the process's admin HTTP server.
func (p *proc) get(path string) (int, string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + p.http + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitFor polls cond until it holds or timeout passes; cond returns a
// description of the state for the failure message.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	var state string
	for {
		var ok bool
		ok, state = cond()
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %s waiting for %s; last state: %s", timeout, what, state)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// endOffsets returns the end offset of every partition of topic.
func endOffsets(t *testing.T, cl *kgo.Client, topic string) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[int32]int64{}
	adm := kadm.NewClient(cl)
	// Listing offsets of a topic the client does not know yet waits for
	// metadata retries; ask for the topic itself first.
	if td, err := adm.ListTopics(ctx, topic); err != nil || td[topic].Err != nil {
		return out
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return out
	}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			out[o.Partition] = o.Offset
		}
	})
	return out
}

func sum(m map[int32]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// diffCopy compares a source record with its copy like verify.Diff, but
// leaves out the provenance header, which flows with provenance (on by
// default with identity naming) add to their copies. Every other header
// is compared, in order.
func diffCopy(src, copy *kgo.Record) string {
	return verify.DiffIgnoring(src, copy, replicate.HeaderProvenance)
}

// markPath returns the cluster IDs of a record's provenance mark, origin
// first, or nil without one.
func markPath(headers []kgo.RecordHeader) []string {
	for _, h := range headers {
		if h.Key == provenance.Header {
			if m, ok := provenance.Parse(h.Value); ok {
				return m.Path
			}
			return nil
		}
	}
	return nil
}
