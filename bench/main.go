// Command bench runs kmirror's benchmark against Apache Kafka's
// MirrorMaker 2 on this machine and writes a markdown report.
//
//	go run ./bench            # the full benchmark, about 13 minutes on 2 cores
//	go run ./bench -quick     # a smoke run of every scenario, about 4 minutes
//
// It builds kmirror and a bare consume-and-produce pipe (bench/ceiling),
// starts two single-node KRaft Apache Kafka brokers (source and target)
// from the jars scripts/kafka/fetch.sh downloads, and runs six scenarios,
// one replicator at a time: backlog catch-up, steady-state latency,
// start-up, many partitions, the ceilings (the bare pipe, and a plain
// producer's ingest rate into the target), and the exactness of consumer
// group offset translation. CPU time and memory of the
// replicator process are sampled from /proc every 200 ms. Every copy is
// checked complete, partition by partition, before its figures count.
//
// The report goes to bench/results/<date>.md; brokers' data and logs live
// in bench/work/ (git-ignored) and are deleted at the end unless -keep.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, opts)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// options are the benchmark's scale and selection.
type options struct {
	quick          bool
	backlogGB      float64
	backlogRuns    int
	steadySeconds  int
	warmupSeconds  int
	steadyMBps     float64
	manyPartitions int
	manyRate       int
	manyWindow     time.Duration
	newTopicTrials int
	offsetsRecords int
	mm2Budget      time.Duration
	scenarios      []string
	tools          []string
	keep           bool
	out            string
	instances      []int // scale-out scenario: processes per run
	// kmirrorScaleOut is the scale_out setting of kmirror's flow outside
	// the scale-out scenario (which always sets it).
	kmirrorScaleOut bool
	// kmirrorProvenance is the provenance setting of kmirror's flow
	// (prefix naming: auto is off; always measures the marks' cost).
	kmirrorProvenance string
	// kmirrorPassThrough sets pass_through on kmirror's flow;
	// pipeForward runs the bare pipe as a batch pass-through pipe.
	kmirrorPassThrough, pipeForward bool
	// kmirrorTxnInterval and kmirrorTxnMaxBytes are the transaction
	// settings of the kmirror-eos flow.
	kmirrorTxnInterval time.Duration
	kmirrorTxnMaxBytes int64
	// note is a paragraph on the run's conditions for the report.
	note string
	// kmirrorSet overrides kmirror's producer and consumer settings in
	// every scenario ("producer.batch_max_bytes" → "4194304").
	kmirrorSet map[string]string
	// wan is the long-links scenario's scale and links.
	wan wanOptions
}

// Scenario names, in the order they run.
const (
	scBacklog = "backlog"
	scSteady  = "steady"
	scStartup = "startup"
	scMany    = "many"
	scOffsets = "offsets"
	// scScaleOut and scWAN run only when named in -scenarios.
	scScaleOut = "scaleout"
	scWAN      = "wan"
)

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.BoolVar(&o.quick, "quick", false, "tiny smoke run of every scenario (about 4 minutes); overrides the scale flags")
	fs.Float64Var(&o.backlogGB, "backlog-gb", 2, "backlog size in GB (10^9 bytes) of 1 KiB records")
	fs.IntVar(&o.backlogRuns, "backlog-runs", 3, "runs of each replicator (and of the ingest ceiling) over the backlog; the report gives each one's median run")
	fs.IntVar(&o.steadySeconds, "steady-seconds", 60, "steady-state measurement length, seconds")
	fs.IntVar(&o.warmupSeconds, "warmup-seconds", 10, "steady-state warm-up before measuring, seconds")
	fs.Float64Var(&o.steadyMBps, "steady-mbps", 10, "steady-state producer rate, MB/s")
	fs.IntVar(&o.manyPartitions, "many-partitions", 2000, "partitions in the many-partitions scenario (topics of 100 partitions)")
	fs.IntVar(&o.manyRate, "many-rate", 1000, "records per second over all partitions in the many-partitions scenario")
	fs.DurationVar(&o.manyWindow, "many-window", 45*time.Second, "many-partitions measurement window")
	fs.IntVar(&o.newTopicTrials, "new-topic-trials", 3, "new topics created in the start-up scenario")
	fs.IntVar(&o.offsetsRecords, "offsets-records", 50000, "records written to the source in the offset translation scenario")
	fs.DurationVar(&o.mm2Budget, "mm2-budget", 6*time.Minute, "time MM2 gets to copy the backlog")
	scenarios := fs.String("scenarios", "backlog,steady,startup,many,offsets", "scenarios to run (the ceilings run with backlog)")
	tools := fs.String("tools", "kmirror,MM2,pipe", "replicators to run, of kmirror, kmirror-eos, MM2, MM2-eos, pipe (any case); the -eos ones are the exactly-once modes")
	fs.BoolVar(&o.keep, "keep", false, "keep bench/work (broker data, logs, configs) afterwards")
	instances := fs.String("instances", "1,2", "scaleout scenario: numbers of kmirror processes running the flow, one run each")
	fs.BoolVar(&o.kmirrorScaleOut, "kmirror-scale-out", true, "scale_out of kmirror's flow outside the scaleout scenario (kmirror's default is true; false runs the whole-flow mode with one lease)")
	fs.BoolVar(&o.pipeForward, "pipe-forward", false, "run the bare pipe as a pass-through pipe (bench/ceiling -forward: record batches written as they are) instead of a decoding one")
	fs.BoolVar(&o.kmirrorPassThrough, "kmirror-pass-through", false, "pass_through on kmirror's flow: record batches in the target's codec written as they are (provenance must be off, exactly-once tools are left as they are)")
	fs.StringVar(&o.kmirrorProvenance, "kmirror-provenance", "auto", "provenance of kmirror's flow (auto: off with the bench's prefix naming; always: every copy carries a mark)")
	fs.DurationVar(&o.kmirrorTxnInterval, "kmirror-transaction-interval", 100*time.Millisecond, "transaction_interval of the kmirror-eos flow (kmirror's default 100ms)")
	fs.Int64Var(&o.kmirrorTxnMaxBytes, "kmirror-transaction-max-bytes", 16<<20, "transaction_max_bytes of the kmirror-eos flow (kmirror's default 16 MiB)")
	fs.StringVar(&o.note, "note", "", "a paragraph for the report on the conditions of the run (e.g. other load on the machine)")
	fs.StringVar(&o.out, "out", "", "report path (default bench/results/<date>.md, <date>-quick.md with -quick)")
	kmirrorSet := fs.String("kmirror-set", "", "kmirror settings to override in every scenario, as key=value,... of "+strings.Join(kmirrorSettable, ", "))
	wanFlags := registerWANFlags(fs)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var err error
	if o.kmirrorSet, err = parseKmirrorSet(*kmirrorSet); err != nil {
		return o, fmt.Errorf("-kmirror-set: %w", err)
	}
	if o.wan, err = wanFlags.parse(o.quick); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.quick {
		o.backlogGB = 0.1
		o.backlogRuns = 1
		o.steadySeconds = 10
		o.warmupSeconds = 3
		o.manyPartitions = 200
		o.manyRate = 200
		o.manyWindow = 10 * time.Second
		o.newTopicTrials = 1
		o.offsetsRecords = 5000
		o.mm2Budget = 2 * time.Minute
	}
	o.scenarios = strings.Split(*scenarios, ",")
	for _, s := range o.scenarios {
		if !slices.Contains([]string{scBacklog, scSteady, scStartup, scMany, scOffsets, scScaleOut, scWAN}, s) {
			return o, fmt.Errorf("-scenarios: unknown scenario %q", s)
		}
	}
	for _, f := range strings.Split(*instances, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > backlogPartitions {
			return o, fmt.Errorf("-instances: %q is not a number of processes from 1 to %d", f, backlogPartitions)
		}
		o.instances = append(o.instances, n)
	}
	for _, name := range strings.Split(*tools, ",") {
		t, ok := canonicalTool(name)
		if !ok {
			return o, fmt.Errorf("-tools: unknown tool %q (known: %s)", name, strings.Join(allTools, ", "))
		}
		o.tools = append(o.tools, t)
	}
	switch {
	case o.backlogGB <= 0, o.backlogRuns < 1, o.steadySeconds <= 0, o.steadyMBps <= 0, o.manyPartitions < 100, o.manyRate <= 0, o.newTopicTrials < 1, o.offsetsRecords < 1000:
		return o, errors.New("scale flags must be positive (and -many-partitions at least 100, -offsets-records at least 1000)")
	}
	return o, nil
}

// env is where things are on this machine.
type env struct {
	root         string // repository root
	workDir      string // bench/work/<run>, deleted at the end
	libs         string // Kafka jars
	java         string
	kmirror      string // built binary
	pipe         string // built bench/ceiling binary
	kafkaVersion string
}

func run(ctx context.Context, opts options) error {
	begin := time.Now()
	h := &harness{opts: opts, begin: begin}
	e, err := prepare(ctx, h)
	if err != nil {
		return err
	}
	h.env = e
	defer func() {
		if opts.keep {
			h.logf("kept %s", e.workDir)
			return
		}
		if err := os.RemoveAll(e.workDir); err != nil {
			h.logf("removing %s: %v", e.workDir, err)
		}
		_ = os.Remove(filepath.Dir(e.workDir)) // bench/work, if nothing else is in it
	}()
	h.report = newReport(h)
	out := opts.out
	if out == "" {
		name := begin.Format("2006-01-02")
		if opts.quick {
			name += "-quick"
		}
		out = filepath.Join(e.root, "bench", "results", name+".md")
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("creating the results directory: %w", err)
	}
	h.reportPath = out

	if err := h.startBrokers(ctx); err != nil {
		return err
	}
	defer h.stopBrokers()

	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{scBacklog, h.runBacklog},
		{scSteady, h.runSteady},
		{scStartup, h.runStartup},
		{scMany, h.runMany},
		{scOffsets, h.runOffsets},
		{scScaleOut, h.runScaleOut},
		{scWAN, h.runWAN},
	}
	for _, s := range steps {
		if !slices.Contains(opts.scenarios, s.name) {
			if s.name == scScaleOut || s.name == scWAN {
				continue // not a default scenario: nothing to note
			}
			h.report.notes = append(h.report.notes, fmt.Sprintf("Scenario %q was not selected (-scenarios) and did not run.", s.name))
			continue
		}
		h.logf("=== scenario %s ===", s.name)
		if err := s.fn(ctx); err != nil {
			if ctx.Err() != nil {
				h.checkpoint()
				return fmt.Errorf("interrupted during %s: %w", s.name, err)
			}
			h.logf("scenario %s failed: %v", s.name, err)
			h.report.notes = append(h.report.notes, fmt.Sprintf("Scenario %s stopped early: %v", s.name, err))
		}
		h.checkpoint()
	}
	h.report.total = time.Since(begin)
	if err := h.writeReport(); err != nil {
		return err
	}
	h.logf("report written to %s (total %s)", out, h.report.total.Round(time.Second))
	return nil
}

// prepare finds the repository, Java and the Kafka jars (fetching them if
// missing), and builds kmirror and the pipe.
func prepare(ctx context.Context, h *harness) (*env, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	e := &env{root: root}
	e.workDir = filepath.Join(root, "bench", "work", h.begin.Format("20060102-150405"))
	if err := os.MkdirAll(filepath.Join(e.workDir, "bin"), 0o755); err != nil {
		return nil, fmt.Errorf("creating the work directory: %w", err)
	}
	if e.java, err = javaPath(); err != nil {
		return nil, err
	}
	if e.kafkaVersion, err = pinnedKafkaVersion(root); err != nil {
		return nil, err
	}
	if e.libs, err = kafkaLibs(ctx, h, root, e.kafkaVersion); err != nil {
		return nil, err
	}
	e.kmirror = filepath.Join(e.workDir, "bin", "kmirror")
	e.pipe = filepath.Join(e.workDir, "bin", "ceiling")
	for _, b := range []struct{ out, pkg string }{{e.kmirror, "./cmd/kmirror"}, {e.pipe, "./bench/ceiling"}} {
		h.logf("building %s", b.pkg)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b.out, b.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %w\n%s", b.pkg, err, out)
		}
	}
	return e, nil
}

// repoRoot walks up from the working directory to the kmirror module's
// go.mod.
func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the repository: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			strings.Contains(string(data), "module github.com/kmirror/kmirror\n") {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no kmirror go.mod in %s or its parents: run the bench from the repository", wd)
		}
	}
}

// javaPath finds java: $JAVA_HOME/bin/java, else java on PATH.
func javaPath() (string, error) {
	if home := os.Getenv("JAVA_HOME"); home != "" {
		java := filepath.Join(home, "bin", "java")
		if _, err := os.Stat(java); err == nil {
			return java, nil
		}
	}
	java, err := exec.LookPath("java")
	if err != nil {
		return "", fmt.Errorf("no java (17+) on PATH or in JAVA_HOME: %w", err)
	}
	return java, nil
}

// pinnedKafkaVersion reads the Kafka version scripts/kafka/fetch.sh pins.
func pinnedKafkaVersion(root string) (string, error) {
	path := filepath.Join(root, "scripts", "kafka", "fetch.sh")
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading the pinned Kafka version: %w", err)
	}
	m := regexp.MustCompile(`(?m)^KAFKA_VERSION=([0-9][0-9A-Za-z.\-]*)$`).FindSubmatch(data)
	if m == nil {
		return "", fmt.Errorf("%s: no KAFKA_VERSION= line", path)
	}
	return string(m[1]), nil
}

// kafkaLibs returns the directory of Kafka jars: $KMIRROR_KAFKA_LIBS, or the
// repository cache, running scripts/kafka/fetch.sh if it is incomplete.
func kafkaLibs(ctx context.Context, h *harness, root, version string) (string, error) {
	if dir := os.Getenv("KMIRROR_KAFKA_LIBS"); dir != "" {
		return dir, checkLibs(dir, version)
	}
	dir := filepath.Join(root, ".cache", "kafka", version, "libs")
	if checkLibs(dir, version) == nil {
		return dir, nil
	}
	h.logf("Kafka %s jars missing: running scripts/kafka/fetch.sh", version)
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "kafka", "fetch.sh"))
	cmd.Dir = root
	cmd.Stderr = os.Stderr
	if _, err := cmd.Output(); err != nil {
		return "", fmt.Errorf("scripts/kafka/fetch.sh: %w", err)
	}
	return dir, checkLibs(dir, version)
}

// checkLibs checks that dir holds the broker and MirrorMaker 2 jars.
func checkLibs(dir, version string) error {
	for _, jar := range []string{"kafka_2.13-" + version + ".jar", "connect-mirror-" + version + ".jar", "connect-runtime-" + version + ".jar"} {
		if _, err := os.Stat(filepath.Join(dir, jar)); err != nil {
			return fmt.Errorf("kafka jars in %s: %w", dir, err)
		}
	}
	return nil
}

// harness runs the scenarios against one source and one target broker.
type harness struct {
	opts     options
	begin    time.Time
	env      *env
	src, tgt *cluster
	// srcLink and tgtLink are the emulated long links in front of the
	// brokers' WAN listeners; nil unless the wan scenario runs.
	srcLink, tgtLink *wanLink
	report           *report
	reportPath       string
}

// logf prints a progress line to stderr, stamped with the time since start.
func (h *harness) logf(format string, args ...any) {
	d := time.Since(h.begin).Round(time.Second)
	fmt.Fprintf(os.Stderr, "[%02d:%02d] %s\n", int(d.Minutes()), int(d.Seconds())%60, fmt.Sprintf(format, args...))
}

// startBrokers starts the source and target brokers side by side.
func (h *harness) startBrokers(ctx context.Context) error {
	h.logf("starting source and target brokers (Kafka %s)", h.env.kafkaVersion)
	type started struct {
		b   *broker
		err error
	}
	if slices.Contains(h.opts.scenarios, scWAN) {
		var err error
		if h.srcLink, err = newWANLink("source"); err != nil {
			return err
		}
		if h.tgtLink, err = newWANLink("target"); err != nil {
			h.srcLink.close()
			return err
		}
	}
	ch := make(chan started, 2)
	for _, name := range []string{"source", "target"} {
		link := h.srcLink
		if name == "target" {
			link = h.tgtLink
		}
		wanAddr := ""
		if link != nil {
			wanAddr = link.addr()
		}
		go func() {
			b, err := startBroker(ctx, h.env, name, wanAddr)
			ch <- started{b, err}
		}()
	}
	var errs []error
	for range 2 {
		s := <-ch
		if s.err != nil {
			errs = append(errs, s.err)
			continue
		}
		c, err := newCluster(s.b.name, s.b)
		if err != nil {
			errs = append(errs, err)
			s.b.stop()
			continue
		}
		if s.b.name == "source" {
			h.src = c
			if h.srcLink != nil {
				h.srcLink.setBackend(s.b.wanListener())
			}
		} else {
			h.tgt = c
			if h.tgtLink != nil {
				h.tgtLink.setBackend(s.b.wanListener())
			}
		}
	}
	if len(errs) > 0 {
		h.stopBrokers()
		return errors.Join(errs...)
	}
	h.logf("source %s, target %s", h.src.b.bootstrap(), h.tgt.b.bootstrap())
	return nil
}

func (h *harness) stopBrokers() {
	for _, l := range []*wanLink{h.srcLink, h.tgtLink} {
		if l != nil {
			l.close()
		}
	}
	h.srcLink, h.tgtLink = nil, nil
	for _, c := range []*cluster{h.src, h.tgt} {
		if c != nil {
			c.close()
			c.b.stop()
		}
	}
	h.src, h.tgt = nil, nil
}

// selected reports whether tool was chosen with -tools.
func (h *harness) selected(tool string) bool { return slices.Contains(h.opts.tools, tool) }
