package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	backlogTopic      = "backlog"
	backlogPartitions = 12
	steadyPartitions  = 12
	startupPartitions = 12
	manyTopicSize     = 100 // partitions per topic in the many-partitions scenario
	stopGrace         = 30 * time.Second
	backlogPoll       = 100 * time.Millisecond // how often the backlog's copy is checked
)

// slug is a short form of a tool's name for topic names.
func slug(tool string) string {
	switch tool {
	case toolKmirror:
		return "km"
	case toolKmirrorEOS:
		return "kmeos"
	case toolMM2:
		return "mm2"
	case toolMM2EOS:
		return "mm2eos"
	default:
		return "pipe"
	}
}

// stopTool stops a replicator gracefully and notes it if it had to be
// killed.
func (h *harness) stopTool(p *proc) {
	if !p.stop(stopGrace) {
		h.logf("%s did not exit within %v of SIGTERM; killed", p.name, stopGrace)
	}
}

// toolFailure describes an error of a replicator with the end of its log.
func toolFailure(p *proc, err error) string {
	if p.exited() {
		return err.Error() // exitError already quotes the log
	}
	return fmt.Sprintf("%v\n\nlast lines of its log:\n%s", err, tail(p.logPath, 15))
}

// ---------------------------------------------------------------------
// Scenario 1 and 5: backlog catch-up, and the ceilings.

// backlogResult is the outcome of the backlog scenario.
type backlogResult struct {
	records     int64
	bytes       int64 // records × 1 KiB
	diskBytes   int64 // the backlog topic's log files on the source
	preload     time.Duration
	ingests     []*ingestResult
	runs        []*copyRun // every run of every tool, in the order they ran
	profileTop  string
	profileNote string
	// The same of kmirror-eos's first run.
	profileTopEOS, profileNoteEOS string
}

// ingestResult is the plain producer's ingest rate into the target.
type ingestResult struct {
	elapsed time.Duration
	cpu     time.Duration // the bench process's CPU time meanwhile
	err     string
}

// copyRun is one replicator's copy of the backlog.
type copyRun struct {
	tool       string
	rep        int // 1 for the first run of the tool
	err        string
	startup    time.Duration // process start to first record on the target
	total      time.Duration // process start to complete
	window     time.Duration // first record to complete
	copied     int64         // records copied when the run ended
	want       int64         // records to copy
	budget     time.Duration // how long the tool had
	whole      usage         // process start to complete (or to the end of the budget)
	copying    usage         // first record to complete
	complete   bool
	verify     verification
	targetDisk int64
	// load is the machine's 1-minute load average at the start and at the
	// end of the run.
	load [2]string
	// markers is, for an exactly-once tool, how many offsets of the copy
	// are not records: its transactions' commit (or abort) markers.
	markers int64
}

func (h *harness) runBacklog(ctx context.Context) error {
	res := &backlogResult{}
	h.report.backlog = res
	res.records = int64(h.opts.backlogGB*1e9/recordSize+backlogPartitions-1) / backlogPartitions * backlogPartitions
	res.bytes = res.records * recordSize

	if err := h.src.createTopics(ctx, backlogPartitions, backlogTopic); err != nil {
		return err
	}
	h.logf("preloading %d records (%.2f GB) into %s on the source", res.records, float64(res.bytes)/1e9, backlogTopic)
	prod, err := kgo.NewClient(producerOpts(h.src.b.bootstrap())...)
	if err != nil {
		return fmt.Errorf("creating the preload producer: %w", err)
	}
	res.preload, err = produceCount(ctx, prod, newEventGen(1), partitionsOf([]string{backlogTopic}, backlogPartitions), res.records)
	prod.Close()
	if err != nil {
		return fmt.Errorf("preloading the backlog: %w", err)
	}
	if res.diskBytes, err = h.src.b.topicDiskBytes(backlogTopic); err != nil {
		return err
	}
	h.logf("preloaded in %s (%.0f MB/s); on disk %.0f MB (compression %.1fx)", res.preload.Round(time.Millisecond),
		mbps(res.bytes, res.preload), float64(res.diskBytes)/1e6, float64(res.bytes)/float64(res.diskBytes))
	want, err := h.src.endOffsets(ctx, backlogTopic)
	if err != nil {
		return err
	}
	if got := want.total(); got != res.records {
		return fmt.Errorf("source holds %d records after the preload, want %d", got, res.records)
	}
	h.checkpoint()

	skip := map[string]bool{} // tools that ran out of time: not run again
	for rep := 1; rep <= h.opts.backlogRuns; rep++ {
		h.logf("backlog run %d of %d", rep, h.opts.backlogRuns)
		in, err := h.measureIngest(ctx, res.records)
		if in != nil {
			res.ingests = append(res.ingests, in)
		}
		if err != nil {
			return err
		}
		h.checkpoint()
		for _, tool := range allTools {
			if !h.selected(tool) || skip[tool] {
				continue
			}
			r, err := h.copyBacklog(ctx, tool, want, rep)
			if r != nil {
				res.runs = append(res.runs, r)
				if !r.complete {
					skip[tool] = true
				}
			}
			if err != nil {
				return err
			}
			h.checkpoint()
		}
	}
	return nil
}

// measureIngest is the second ceiling: a plain producer writing the
// backlog's volume into a fresh 12-partition topic of the target, cycling
// over pre-made events so that event generation is not measured.
// It returns an error only if the topic cannot be made.
func (h *harness) measureIngest(ctx context.Context, n int64) (*ingestResult, error) {
	const topic = "ingest-ceiling"
	res := &ingestResult{}
	if err := h.tgt.createTopics(ctx, backlogPartitions, topic); err != nil {
		return nil, err
	}
	defer func() {
		if err := h.tgt.deleteTopicsAndWait(context.WithoutCancel(ctx), topic); err != nil {
			h.logf("deleting %s: %v", topic, err)
		}
	}()
	gen := newEventGen(2)
	pool := make([][]byte, 20_000)
	keys := make([][]byte, len(pool))
	for i := range pool {
		pool[i], keys[i] = gen.value(), gen.key()
	}
	prod, err := kgo.NewClient(producerOpts(h.tgt.b.bootstrap())...)
	if err != nil {
		return nil, fmt.Errorf("creating the ingest producer: %w", err)
	}
	defer prod.Close()
	h.logf("ceiling: plain producer writing %d records into the target", n)
	cpu0, _ := readProc(os.Getpid())
	res.elapsed, err = producePool(ctx, prod, pool, keys, partitionsOf([]string{topic}, backlogPartitions), n)
	cpu1, _ := readProc(os.Getpid())
	res.cpu = cpu1.cpu - cpu0.cpu
	if err != nil {
		res.err = err.Error()
		return res, nil
	}
	h.logf("ceiling: target ingest %.0f MB/s", mbps(n*recordSize, res.elapsed))
	return res, nil
}

// copyBacklog runs tool on the backlog until the copy is complete or the
// tool's time budget ends, then stops it, verifies the copy and deletes
// it. An error is returned only for faults of the harness; the tool's own
// failures are in the result. kmirror's first run writes a CPU profile.
func (h *harness) copyBacklog(ctx context.Context, tool string, want offsets, rep int) (*copyRun, error) {
	r := &copyRun{tool: tool, rep: rep, budget: 10 * time.Minute}
	if baseTool(tool) == toolMM2 {
		r.budget = h.opts.mm2Budget
	}
	names := targetNames(tool, []string{backlogTopic})
	if tool == toolPipe {
		if err := h.tgt.createTopics(ctx, backlogPartitions, names[backlogTopic]); err != nil {
			return nil, err
		}
	}
	run := toolRun{id: fmt.Sprintf("backlog-%s-%d", slug(tool), rep), topics: backlogTopic, topicList: []string{backlogTopic}}
	profile := ""
	if baseTool(tool) == toolKmirror && rep == 1 {
		profile = filepath.Join(h.env.workDir, tool+"-backlog.pprof")
		run.cpuProfile = profile
	}
	r.load[0] = loadAvg1()
	h.logf("%s: copying the backlog (budget %s; load average %s)", tool, r.budget, r.load[0])
	l, err := h.launch(tool, run)
	if err != nil {
		return nil, err
	}
	defer func() {
		// The next run starts with an empty target again.
		if err := h.tgt.deleteTopicsAndWait(context.WithoutCancel(ctx), names[backlogTopic]); err != nil {
			h.logf("deleting %s: %v", names[backlogTopic], err)
		}
	}()
	w := &copyWatch{src: h.src, tgt: h.tgt, names: names, want: want, watched: l, poll: backlogPoll, committed: eos(tool)}
	cr, werr := w.wait(ctx, l.started.Add(r.budget))
	w.close()
	end := time.Now()
	if !cr.complete.IsZero() {
		end = cr.complete
	}
	l.sampleNow()
	r.load[1] = loadAvg1()
	r.copied, r.want = cr.copied, cr.want
	r.complete = werr == nil
	r.whole = l.usageBetween(l.started, end)
	r.total = end.Sub(l.started)
	if !cr.firstRecord.IsZero() {
		r.startup = cr.firstRecord.Sub(l.started)
		r.window = end.Sub(cr.firstRecord)
		r.copying = l.usageBetween(cr.firstRecord, end)
	}
	if werr != nil {
		r.err = toolFailure(l, werr)
		h.logf("%s: %v", tool, werr)
	}
	h.stopTool(l)
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	if r.complete {
		h.logf("%s: complete in %s (first record after %s): %.0f MB/s, %.1f CPU s/GB, peak RSS %.0f MiB",
			tool, r.total.Round(time.Millisecond), r.startup.Round(time.Millisecond), mbps(r.copied*recordSize, r.window),
			cpuPerGB(r.copying.cpu, r.copied*recordSize), mib(r.whole.peakRSS))
	}
	v, err := verifyCopy(ctx, h.src, h.tgt, names, eos(tool))
	if err != nil {
		return r, err
	}
	if !v.ok {
		v.logNote = logProblems(l.logPath)
	}
	r.verify = v
	h.logf("%s: %s", tool, v)
	if eos(tool) {
		r.markers = h.transactionMarkers(ctx, names[backlogTopic], r.copied)
	}
	r.targetDisk, _ = h.tgt.b.topicDiskBytes(names[backlogTopic])

	if profile != "" {
		top, note := h.profileTop(ctx, profile)
		if eos(tool) {
			h.report.backlog.profileTopEOS, h.report.backlog.profileNoteEOS = top, note
		} else {
			h.report.backlog.profileTop, h.report.backlog.profileNote = top, note
		}
	}
	return r, nil
}

// profileTop runs go tool pprof -top on kmirror's CPU profile.
func (h *harness) profileTop(ctx context.Context, profile string) (string, string) {
	if _, err := os.Stat(profile); err != nil {
		return "", fmt.Sprintf("no CPU profile: %v", err)
	}
	cmd := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=25", h.env.kmirror, profile)
	cmd.Dir = h.env.root
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Sprintf("go tool pprof: %v", err)
	}
	return strings.TrimRight(string(out), "\n"), ""
}

// ---------------------------------------------------------------------
// Scenario 2: steady state.

// steadyRun is one replicator's steady-state run.
type steadyRun struct {
	tool     string
	err      string
	produced int64           // records produced at the fixed rate
	achieved float64         // the producer's achieved rate, MB/s
	lat      []time.Duration // sorted latencies of the measured records
	worst    []secondMax     // the seconds with the largest latencies
	usage    usage           // the replicator during the measured period
	verify   verification
	load     [2]string // 1-minute load average at the start and the end of the measurement
}

func (h *harness) runSteady(ctx context.Context) error {
	for _, tool := range allTools {
		if !h.selected(tool) {
			continue
		}
		r, err := h.steadyOnce(ctx, tool)
		if r != nil {
			h.report.steady = append(h.report.steady, r)
		}
		if err != nil {
			return err
		}
		h.checkpoint()
	}
	return nil
}

func (h *harness) steadyOnce(ctx context.Context, tool string) (*steadyRun, error) {
	r := &steadyRun{tool: tool}
	topic := "steady-" + slug(tool)
	names := targetNames(tool, []string{topic})
	if err := h.src.createTopics(ctx, steadyPartitions, topic); err != nil {
		return nil, err
	}
	if tool == toolPipe {
		if err := h.tgt.createTopics(ctx, steadyPartitions, names[topic]); err != nil {
			return nil, err
		}
	}
	prod, err := kgo.NewClient(producerOpts(h.src.b.bootstrap())...)
	if err != nil {
		return nil, fmt.Errorf("creating the producer: %w", err)
	}
	defer prod.Close()
	parts := partitionsOf([]string{topic}, steadyPartitions)

	h.logf("%s: steady state at %.0f MB/s for %ds (after %ds warm-up)", tool, h.opts.steadyMBps, h.opts.steadySeconds, h.opts.warmupSeconds)
	l, err := h.launch(tool, toolRun{id: "steady-" + slug(tool), topics: topic, topicList: []string{topic}})
	if err != nil {
		return nil, err
	}
	defer h.stopTool(l)

	// Ready: one record per partition has gone through.
	if _, err := produceCount(ctx, prod, newEventGen(3), parts, steadyPartitions); err != nil {
		return nil, fmt.Errorf("producing the readiness records: %w", err)
	}
	ready := &copyWatch{src: h.src, tgt: h.tgt, names: names, watched: l, poll: 100 * time.Millisecond,
		want: offsets{topic: fill(steadyPartitions, 1)}, committed: eos(tool)}
	_, err = ready.wait(ctx, time.Now().Add(3*time.Minute))
	ready.close()
	if err != nil {
		r.err = toolFailure(l, fmt.Errorf("not replicating within 3 minutes: %w", err))
		return r, nil
	}

	warmup := time.Duration(h.opts.warmupSeconds) * time.Second
	measure := time.Duration(h.opts.steadySeconds) * time.Second
	begin := time.Now()
	from := begin.Add(warmup)
	// The exactly-once tools' records are read as read_committed
	// consumers see them: once their transaction committed.
	probe, err := newLatencyProbe(h.tgt.b.bootstrap(), []string{names[topic]}, from, eos(tool))
	if err != nil {
		return nil, err
	}
	probeCtx, stopProbe := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { probe.run(probeCtx) })
	defer func() { stopProbe(); wg.Wait() }()

	rp := &rateProducer{cl: prod, parts: parts, perSec: h.opts.steadyMBps * 1e6 / recordSize, gen: newEventGen(4)}
	loadAtStart := make(chan string, 1)
	go func() {
		select {
		case <-time.After(warmup):
			loadAtStart <- loadAvg1()
		case <-ctx.Done():
		}
	}()
	if err := rp.run(ctx, warmup+measure); err != nil {
		return nil, fmt.Errorf("steady producer: %w", err)
	}
	end := time.Now()
	select {
	case r.load[0] = <-loadAtStart:
	default:
	}
	r.load[1] = loadAvg1()
	r.produced = rp.produced.Load()
	r.achieved = mbps(r.produced*recordSize, end.Sub(begin))
	r.usage = l.usageBetween(from, end)

	total := r.produced + steadyPartitions
	if err := probe.waitSeen(ctx, total, 2*time.Minute); err != nil {
		r.err = toolFailure(l, err)
	}
	stopProbe()
	wg.Wait()
	r.lat = probe.latencies()
	r.worst = probe.worstSeconds(3)
	v, err := verifyCopy(ctx, h.src, h.tgt, names, eos(tool))
	if err != nil {
		return r, err
	}
	if !v.ok {
		v.logNote = logProblems(l.logPath)
	}
	r.verify = v
	h.logf("%s: p50 %s, p99 %s, max %s over %d records (worst seconds: %s); %.2f cores; %s", tool,
		ms(percentile(r.lat, 50)), ms(percentile(r.lat, 99)), ms(percentile(r.lat, 100)), len(r.lat), worstString(r.worst), r.usage.cores(), v)
	return r, nil
}

// worstString renders the worst seconds of a latency measurement.
func worstString(ws []secondMax) string {
	var parts []string
	for _, w := range ws {
		parts = append(parts, fmt.Sprintf("+%ds: %s", w.second, ms(w.max)))
	}
	return strings.Join(parts, ", ")
}

// fill returns n partitions each with offset v.
func fill(n int32, v int64) map[int32]int64 {
	m := make(map[int32]int64, n)
	for p := range n {
		m[p] = v
	}
	return m
}

// ---------------------------------------------------------------------
// Scenario 3: start-up.

// startupRun is one replicator's start-up measurements.
type startupRun struct {
	tool     string
	err      string
	toFirst  time.Duration   // process start to first record on the target
	newTopic []time.Duration // each new topic's creation to its first record on the target
	verify   verification
}

func (h *harness) runStartup(ctx context.Context) error {
	for _, tool := range replicators {
		if !h.selected(tool) {
			continue
		}
		r, err := h.startupOnce(ctx, tool)
		if r != nil {
			h.report.startup = append(h.report.startup, r)
		}
		if err != nil {
			return err
		}
		h.checkpoint()
	}
	return nil
}

func (h *harness) startupOnce(ctx context.Context, tool string) (*startupRun, error) {
	r := &startupRun{tool: tool}
	base := "startup-" + slug(tool)
	first := base + "-0"
	if err := h.src.createTopics(ctx, startupPartitions, first); err != nil {
		return nil, err
	}
	prod, err := kgo.NewClient(producerOpts(h.src.b.bootstrap())...)
	if err != nil {
		return nil, fmt.Errorf("creating the producer: %w", err)
	}
	defer prod.Close()
	gen := newEventGen(5)
	if _, err := produceCount(ctx, prod, gen, partitionsOf([]string{first}, startupPartitions), 100*startupPartitions); err != nil {
		return nil, err
	}
	topics := []string{first}

	h.logf("%s: start-up", tool)
	l, err := h.launch(tool, toolRun{id: "startup-" + slug(tool), topics: base + "-.*"})
	if err != nil {
		return nil, err
	}
	defer h.stopTool(l)
	at, err := waitFirstRecord(ctx, h.tgt, []string{targetName(tool, first)}, 50*time.Millisecond, l.started.Add(3*time.Minute), l, eos(tool))
	if err != nil {
		r.err = toolFailure(l, fmt.Errorf("first record: %w", err))
		return r, nil
	}
	r.toFirst = at.Sub(l.started)
	h.logf("%s: first record on the target %s after process start", tool, r.toFirst.Round(time.Millisecond))

	for i := 1; i <= h.opts.newTopicTrials; i++ {
		// Let the replicator settle between trials, so that each new topic
		// lands at a random point of its refresh cycle.
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(2*time.Second + time.Duration(i)*700*time.Millisecond):
		}
		name := fmt.Sprintf("%s-new%d", base, i)
		if err := h.src.createTopics(ctx, startupPartitions, name); err != nil {
			return r, err
		}
		created := time.Now()
		topics = append(topics, name)
		pctx, stopProd := context.WithCancel(ctx)
		rp := &rateProducer{cl: prod, parts: partitionsOf([]string{name}, startupPartitions), perSec: 50, gen: gen}
		done := make(chan error, 1)
		go func() { done <- rp.run(pctx, 0) }()
		at, err := waitFirstRecord(ctx, h.tgt, []string{targetName(tool, name)}, 50*time.Millisecond, created.Add(2*time.Minute), l, eos(tool))
		stopProd()
		if perr := <-done; perr != nil && !errors.Is(perr, context.Canceled) {
			return r, fmt.Errorf("producing into %s: %w", name, perr)
		}
		if err != nil {
			r.err = toolFailure(l, fmt.Errorf("new topic %s: %w", name, err))
			return r, nil
		}
		d := at.Sub(created)
		r.newTopic = append(r.newTopic, d)
		h.logf("%s: new topic %s on the target %s after its creation", tool, name, d.Round(time.Millisecond))
	}

	names := targetNames(tool, topics)
	want, err := h.src.endOffsets(ctx, topics...)
	if err != nil {
		return r, err
	}
	w := &copyWatch{src: h.src, tgt: h.tgt, names: names, want: want, watched: l, poll: 200 * time.Millisecond, committed: eos(tool)}
	if _, err := w.wait(ctx, time.Now().Add(2*time.Minute)); err != nil {
		r.err = toolFailure(l, err)
	}
	w.close()
	r.verify, err = verifyCopy(ctx, h.src, h.tgt, names, eos(tool))
	if err != nil {
		return r, err
	}
	if !r.verify.ok {
		r.verify.logNote = logProblems(l.logPath)
	}
	h.logf("%s: %s", tool, r.verify)
	return r, nil
}

// ---------------------------------------------------------------------
// Scenario 4: many partitions.

// manyRun is one replicator's many-partitions run.
type manyRun struct {
	tool       string
	err        string
	partitions int
	caughtUp   time.Duration // process start to every partition caught up
	window     usage         // the measurement window, traffic flowing
	whole      usage         // process start to end of the window
	load       [2]string     // 1-minute load average at the start and the end of the window
	records    int64
	verify     verification
}

func (h *harness) runMany(ctx context.Context) error {
	for _, tool := range replicators {
		if !h.selected(tool) {
			continue
		}
		r, err := h.manyOnce(ctx, tool)
		if r != nil {
			h.report.many = append(h.report.many, r)
		}
		if err != nil {
			return err
		}
		h.checkpoint()
	}
	return nil
}

func (h *harness) manyOnce(ctx context.Context, tool string) (*manyRun, error) {
	n := h.opts.manyPartitions / manyTopicSize
	r := &manyRun{tool: tool, partitions: n * manyTopicSize}
	var topics []string
	for i := range n {
		topics = append(topics, fmt.Sprintf("many-%s-%02d", slug(tool), i))
	}
	names := targetNames(tool, topics)
	defer func() {
		// Leave the brokers as they were for the next run.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := h.src.deleteTopics(cctx, topics...); err != nil {
			h.logf("cleaning up: %v", err)
		}
		if err := h.tgt.deleteTopics(cctx, sortedValues(names)...); err != nil {
			h.logf("cleaning up: %v", err)
		}
	}()
	h.logf("%s: creating %d topics of %d partitions", tool, n, manyTopicSize)
	if err := h.src.createTopics(ctx, manyTopicSize, topics...); err != nil {
		return nil, err
	}
	prod, err := kgo.NewClient(producerOpts(h.src.b.bootstrap())...)
	if err != nil {
		return nil, fmt.Errorf("creating the producer: %w", err)
	}
	defer prod.Close()
	parts := partitionsOf(topics, manyTopicSize)
	gen := newEventGen(6)
	// Every partition holds a few records before the replicator starts.
	if _, err := produceCount(ctx, prod, gen, parts, int64(5*len(parts))); err != nil {
		return nil, err
	}
	pctx, stopProd := context.WithCancel(ctx)
	rp := &rateProducer{cl: prod, parts: parts, perSec: float64(h.opts.manyRate), gen: gen}
	prodDone := make(chan error, 1)
	go func() { prodDone <- rp.run(pctx, 0) }()
	stopProducer := func() error {
		stopProd()
		if err := <-prodDone; err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("light producer: %w", err)
		}
		return nil
	}
	defer func() {
		if pctx.Err() == nil {
			_ = stopProducer()
		}
	}()

	h.logf("%s: %d partitions, %d records/s", tool, r.partitions, h.opts.manyRate)
	l, err := h.launch(tool, toolRun{id: "many-" + slug(tool), topics: "many-" + slug(tool) + "-.*"})
	if err != nil {
		return nil, err
	}
	defer h.stopTool(l)
	want, err := h.src.endOffsets(ctx, topics...)
	if err != nil {
		return r, err
	}
	w := &copyWatch{src: h.src, tgt: h.tgt, names: names, want: want, watched: l, poll: time.Second, committed: eos(tool)}
	defer w.close()
	cr, err := w.wait(ctx, l.started.Add(5*time.Minute))
	if err != nil {
		r.err = toolFailure(l, fmt.Errorf("catching up on %d partitions: %w", r.partitions, err))
		return r, nil
	}
	r.caughtUp = cr.complete.Sub(l.started)
	h.logf("%s: every partition caught up %s after process start; measuring for %s", tool, r.caughtUp.Round(time.Millisecond), h.opts.manyWindow)

	w0 := time.Now()
	r.load[0] = loadAvg1()
	select {
	case <-ctx.Done():
		return r, ctx.Err()
	case <-time.After(h.opts.manyWindow):
	}
	l.sampleNow()
	w1 := time.Now()
	r.load[1] = loadAvg1()
	r.window = l.usageBetween(w0, w1)
	r.whole = l.usageBetween(l.started, w1)

	if err := stopProducer(); err != nil {
		return r, err
	}
	if w.want, err = h.src.endOffsets(ctx, topics...); err != nil {
		return r, err
	}
	r.records = w.want.total()
	if _, err := w.wait(ctx, time.Now().Add(2*time.Minute)); err != nil {
		r.err = toolFailure(l, err)
	}
	if r.verify, err = verifyCopy(ctx, h.src, h.tgt, names, eos(tool)); err != nil {
		return r, err
	}
	if !r.verify.ok {
		r.verify.logNote = logProblems(l.logPath)
	}
	h.logf("%s: %.3f cores, RSS %.0f MiB (peak %.0f MiB); %s", tool, r.window.cores(), mib(r.window.lastRSS), mib(r.whole.peakRSS), r.verify)
	return r, nil
}

// sortedValues returns the values of m, sorted.
func sortedValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

// ---------------------------------------------------------------------
// Units.

// mbps is a rate in MB (10^6 bytes) per second.
func mbps(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) / 1e6 / d.Seconds()
}

// cpuPerGB is CPU seconds per GB (10^9 bytes) of records.
func cpuPerGB(cpu time.Duration, bytes int64) float64 {
	if bytes <= 0 {
		return 0
	}
	return cpu.Seconds() / (float64(bytes) / 1e9)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

// transactionMarkers returns the offsets of topic on the target that hold
// no record a read_committed consumer sees: the markers of the
// transactions the copy was written in (and aborted records, if any),
// the end offsets' total less the records. -1 if unknown.
func (h *harness) transactionMarkers(ctx context.Context, topic string, records int64) int64 {
	end, err := h.tgt.endOffsets(ctx, topic)
	if err != nil {
		return -1
	}
	return end.total() - records
}
