package main

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// ---------------------------------------------------------------------
// Scenario "scaleout" (not run by default): the backlog copied by one
// flow with scale_out: true run by 1, 2, ... kmirror processes at once
// (-instances), each process with the same configuration.

const scaleOutTopic = "scaleout"

// scaleOutResult is the outcome of the scale-out scenario.
type scaleOutResult struct {
	records int64
	preload time.Duration
	runs    []*scaleOutRun
}

// scaleOutRun is one copy of the backlog by n processes.
type scaleOutRun struct {
	instances int
	err       string
	startup   time.Duration // first process start to first record on the target
	total     time.Duration // first process start to complete
	window    time.Duration // first record to complete
	copied    int64
	complete  bool
	per       []instanceUsage
	verify    verification
}

// instanceUsage is one process's share of a scale-out run.
type instanceUsage struct {
	copying    usage // first record to complete
	whole      usage // process start to complete
	partitions int   // partitions it owned at the end (its last "partitions assigned" log line)
	records    int64 // records it replicated (its "flow stopped" log line), -1 if unknown
}

func (h *harness) runScaleOut(ctx context.Context) error {
	res := &scaleOutResult{}
	h.report.scaleOut = res
	res.records = int64(h.opts.backlogGB*1e9/recordSize+backlogPartitions-1) / backlogPartitions * backlogPartitions
	if err := h.src.createTopics(ctx, backlogPartitions, scaleOutTopic); err != nil {
		return err
	}
	h.logf("scale-out: preloading %d records (%.2f GB) into %s", res.records, float64(res.records*recordSize)/1e9, scaleOutTopic)
	prod, err := kgo.NewClient(producerOpts(h.src.b.bootstrap())...)
	if err != nil {
		return fmt.Errorf("creating the preload producer: %w", err)
	}
	res.preload, err = produceCount(ctx, prod, newEventGen(7), partitionsOf([]string{scaleOutTopic}, backlogPartitions), res.records)
	prod.Close()
	if err != nil {
		return fmt.Errorf("preloading the scale-out backlog: %w", err)
	}
	want, err := h.src.endOffsets(ctx, scaleOutTopic)
	if err != nil {
		return err
	}
	h.checkpoint()
	for _, n := range h.opts.instances {
		r, err := h.scaleOutOnce(ctx, n, want)
		if r != nil {
			res.runs = append(res.runs, r)
		}
		if err != nil {
			return err
		}
		h.checkpoint()
	}
	return nil
}

// scaleOutOnce copies the backlog with n kmirror processes of one flow.
func (h *harness) scaleOutOnce(ctx context.Context, n int, want offsets) (*scaleOutRun, error) {
	r := &scaleOutRun{instances: n}
	names := targetNames(toolKmirror, []string{scaleOutTopic})
	run := toolRun{id: fmt.Sprintf("scaleout-%d", n), topics: scaleOutTopic, topicList: []string{scaleOutTopic}, scaleOut: true}
	h.logf("scale-out: %d kmirror process(es) of one flow copying the backlog", n)
	var procs []*proc
	for i := range n {
		run.instance = i + 1
		l, err := h.launchKmirror(run)
		if err != nil {
			for _, p := range procs {
				h.stopTool(p)
			}
			return nil, err
		}
		procs = append(procs, l)
	}
	defer func() {
		if err := h.tgt.deleteTopicsAndWait(context.WithoutCancel(ctx), names[scaleOutTopic]); err != nil {
			h.logf("deleting %s: %v", names[scaleOutTopic], err)
		}
	}()
	begin := procs[0].started
	w := &copyWatch{src: h.src, tgt: h.tgt, names: names, want: want, watched: procs[0], poll: backlogPoll}
	cr, werr := w.wait(ctx, begin.Add(10*time.Minute))
	end := time.Now()
	if !cr.complete.IsZero() {
		end = cr.complete
	}
	r.copied, r.complete, r.total = cr.copied, werr == nil, end.Sub(begin)
	if !cr.firstRecord.IsZero() {
		r.startup, r.window = cr.firstRecord.Sub(begin), end.Sub(cr.firstRecord)
	}
	if werr != nil {
		r.err = toolFailure(procs[0], werr)
		h.logf("scale-out: %v", werr)
	}
	for _, p := range procs {
		p.sampleNow()
	}
	for _, p := range procs {
		u := instanceUsage{whole: p.usageBetween(p.started, end), records: -1}
		if !cr.firstRecord.IsZero() {
			u.copying = p.usageBetween(cr.firstRecord, end)
		}
		r.per = append(r.per, u)
	}
	for i, p := range procs {
		h.stopTool(p)
		r.per[i].partitions, r.per[i].records = logShare(p.logPath)
	}
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	v, err := verifyCopy(ctx, h.src, h.tgt, names, false)
	if err != nil {
		return r, err
	}
	r.verify = v
	var cpus []string
	for i, u := range r.per {
		cpus = append(cpus, fmt.Sprintf("#%d %.1f CPU s (%d partitions, %d records)", i+1, u.copying.cpu.Seconds(), u.partitions, u.records))
	}
	h.logf("scale-out: %d instance(s): complete in %s (first record after %s): %.0f MB/s; %s; %s", n,
		r.total.Round(time.Millisecond), r.startup.Round(time.Millisecond), mbps(r.copied*recordSize, r.window), strings.Join(cpus, ", "), v)
	return r, nil
}

var (
	reOwned   = regexp.MustCompile(`msg="partitions assigned".* owned=(\d+)`)
	reStopped = regexp.MustCompile(`msg="flow stopped".* replicated_records=(\d+)`)
)

// logShare reads from a kmirror log how many partitions the process owned
// last and how many records it replicated (-1 if its log does not say).
func logShare(path string) (partitions int, records int64) {
	records = -1
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if m := reOwned.FindStringSubmatch(line); m != nil {
			partitions, _ = strconv.Atoi(m[1])
		}
		if m := reStopped.FindStringSubmatch(line); m != nil {
			records, _ = strconv.ParseInt(m[1], 10, 64)
		}
	}
	return partitions, records
}

func (r *report) renderScaleOut(w func(string, ...any)) {
	s := r.scaleOut
	if s == nil {
		return
	}
	w("## Scale-out: one flow run by several kmirror processes\n\n")
	w("%d records of 1 KiB (%.2f GB) in topic `%s`, %d partitions, preloaded on the source; one flow with `scale_out: true` and the same configuration in every process (kmirror's settings as in the backlog scenario), all processes started at once. Time runs from the first process's start; MB/s from the first record on the target to the last. CPU is each process's user + system time from /proc/<pid>/stat over the copy (first record → complete).\n\n",
		s.records, float64(s.records*recordSize)/1e9, scaleOutTopic, backlogPartitions)
	w("| instances | complete | start → all copied | first record → all copied | MB/s | MB/s vs 1 instance | CPU s, every instance (copy) | CPU s per GB (all instances) | copy |\n|---:|---|---:|---:|---:|---:|---|---:|---|\n")
	var base float64
	for _, run := range s.runs {
		rate := mbps(run.copied*recordSize, run.window)
		if run.instances == 1 && run.complete {
			base = rate
		}
		rel := "–"
		if base > 0 && run.complete {
			rel = fmt.Sprintf("%.2f×", rate/base)
		}
		var cpus []string
		var sum time.Duration
		for i, u := range run.per {
			cpus = append(cpus, fmt.Sprintf("#%d: %.1f (%d partitions, %s records)", i+1, u.copying.cpu.Seconds(), u.partitions, countOrUnknown(u.records)))
			sum += u.copying.cpu
		}
		w("| %d | %v | %s | %s | %.1f | %s | %s | %.1f | %s |\n", run.instances, run.complete, secs(run.total), secs(run.window), rate, rel,
			strings.Join(cpus, "; "), cpuPerGB(sum, run.copied*recordSize), run.verify.short())
	}
	for _, run := range s.runs {
		if run.err != "" {
			w("\n%d instances: %s\n", run.instances, codeBlock(run.err))
		}
	}
	w("\n")
}

func countOrUnknown(n int64) string {
	if n < 0 {
		return "?"
	}
	return strconv.FormatInt(n, 10)
}
