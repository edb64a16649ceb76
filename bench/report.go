package main

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// report collects the benchmark's results and renders them as markdown.
type report struct {
	h       *harness
	machine [][2]string
	total   time.Duration
	backlog *backlogResult
	steady  []*steadyRun
	startup []*startupRun
	many    []*manyRun
	offsets *offsetsResult
	// scaleOut is the scale-out scenario (not run by default).
	scaleOut *scaleOutResult
	// wan is the long-links scenario (not run by default).
	wan   *wanResult
	notes []string
}

func newReport(h *harness) *report {
	return &report{h: h, machine: machineInfo(h)}
}

// writeReport renders the report into its file; it is called after every
// step, so that an interrupted run leaves what it measured.
func (h *harness) writeReport() error {
	if h.report == nil || h.reportPath == "" {
		return nil
	}
	tmp := h.reportPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(h.report.render()), 0o644); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	if err := os.Rename(tmp, h.reportPath); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	return nil
}

// checkpoint writes the report so far, logging a failure.
func (h *harness) checkpoint() {
	if err := h.writeReport(); err != nil {
		h.logf("%v", err)
	}
}

// machineInfo describes this machine and the software under test.
func machineInfo(h *harness) [][2]string {
	info := [][2]string{
		{"CPU", fmt.Sprintf("%d cores, %s", runtime.NumCPU(), firstMatch("/proc/cpuinfo", "model name"))},
		{"Memory", memTotal()},
		{"Kernel", "Linux " + strings.TrimSpace(readString("/proc/sys/kernel/osrelease"))},
		{"OS", osName()},
		{"Go", runtime.Version()},
		{"Java", commandLine(h, "", "java", "-version")},
		{"Apache Kafka (brokers and MM2)", h.env.kafkaVersion + " (jars from Maven Central, scripts/kafka/fetch.sh)"},
	}
	commit := commandLine(h, h.env.root, "git", "rev-parse", "--short", "HEAD")
	if dirty := commandLine(h, h.env.root, "git", "status", "--porcelain", "--untracked-files=no"); dirty != "" && !strings.HasPrefix(dirty, "(") {
		commit += " with uncommitted changes"
	}
	info = append(info, [2]string{"kmirror", "commit " + commit})
	info = append(info, [2]string{"Load average (1, 5, 15 min) at the start", loadAvg()})
	return info
}

// loadAvg1 is the 1-minute load average.
func loadAvg1() string {
	f := strings.Fields(readString("/proc/loadavg"))
	if len(f) < 1 {
		return "?"
	}
	return f[0]
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	f := strings.Fields(readString("/proc/loadavg"))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], ", ")
}

func readString(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return string(data)
}

// firstMatch returns the value of the first "key: value" line of path.
func firstMatch(path, key string) string {
	for line := range strings.Lines(readString(path)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func memTotal() string {
	var kb int64
	if _, err := fmt.Sscanf(firstMatch("/proc/meminfo", "MemTotal"), "%d kB", &kb); err != nil {
		return "unknown"
	}
	return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
}

func osName() string {
	for line := range strings.Lines(readString("/etc/os-release")) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return "unknown"
}

// commandLine runs a read-only command and returns the first line of its
// output, or a note in parentheses.
func commandLine(h *harness, dir, name string, args ...string) string {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Sprintf("(%s: %v)", name, err)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// ---------------------------------------------------------------------
// Figures and the summary table.

// figure is one number of the report, or why there is none.
type figure struct {
	v     float64
	ok    bool   // the number counts (and may be compared)
	shown bool   // the number is shown even though it does not count
	note  string // shown instead of, or after, the number
	// noRatio: no ratio makes sense with this figure (a count of 0).
	noRatio bool
}

func val(v float64) figure       { return figure{v: v, ok: true} }
func missing(note string) figure { return figure{note: note} }
func (f figure) fmt(format string) string {
	if !f.ok && !f.shown {
		if f.note == "" {
			return "—"
		}
		return f.note
	}
	s := fmt.Sprintf(format, f.v)
	if f.note != "" {
		s += " " + f.note
	}
	return s
}

// ratio renders a/b.
func ratio(a, b figure) string {
	if !a.ok || !b.ok || a.noRatio || b.noRatio || b.v == 0 || math.IsNaN(a.v/b.v) {
		return "—"
	}
	return fmt.Sprintf("%.2f×", a.v/b.v)
}

// row is a line of the summary table.
type row struct {
	label  string
	better string // "higher" or "lower"
	format string
	km     figure
	mm2    figure
	ceil   figure
}

func (r *report) summaryRows() []row {
	var rows []row
	if b := r.backlog; b != nil {
		km, mm2, pipe := r.copyRun(toolKmirror), r.copyRun(toolMM2), r.copyRun(toolPipe)
		ingest := missing("")
		if in := b.medianIngest(); in != nil {
			ingest = val(mbps(b.bytes, in.elapsed))
		}
		rows = append(rows,
			row{"1. Backlog catch-up, MB/s (first record on target → all copied)", "higher", "%.1f",
				copyFigure(km, func(c *copyRun) float64 { return mbps(c.copied*recordSize, c.window) }),
				copyFigure(mm2, func(c *copyRun) float64 { return mbps(c.copied*recordSize, c.window) }),
				copyFigure(pipe, func(c *copyRun) float64 { return mbps(c.copied*recordSize, c.window) })},
			row{"1. Backlog catch-up, MB/s (process start → all copied)", "higher", "%.1f",
				copyFigure(km, func(c *copyRun) float64 { return mbps(c.copied*recordSize, c.total) }),
				copyFigure(mm2, func(c *copyRun) float64 { return mbps(c.copied*recordSize, c.total) }),
				copyFigure(pipe, func(c *copyRun) float64 { return mbps(c.copied*recordSize, c.total) })},
			row{"1. Backlog catch-up, CPU s per GB (process start → all copied)", "lower", "%.1f",
				copyFigure(km, func(c *copyRun) float64 { return cpuPerGB(c.whole.cpu, c.copied*recordSize) }),
				copyFigure(mm2, func(c *copyRun) float64 { return cpuPerGB(c.whole.cpu, c.copied*recordSize) }),
				copyFigure(pipe, func(c *copyRun) float64 { return cpuPerGB(c.whole.cpu, c.copied*recordSize) })},
			row{"1. Backlog catch-up, CPU s per GB (copy only)", "lower", "%.1f",
				copyFigure(km, func(c *copyRun) float64 { return cpuPerGB(c.copying.cpu, c.copied*recordSize) }),
				copyFigure(mm2, func(c *copyRun) float64 { return cpuPerGB(c.copying.cpu, c.copied*recordSize) }),
				copyFigure(pipe, func(c *copyRun) float64 { return cpuPerGB(c.copying.cpu, c.copied*recordSize) })},
			row{"1. Backlog catch-up, peak RSS, MiB", "lower", "%.0f",
				copyFigure(km, func(c *copyRun) float64 { return mib(c.whole.peakRSS) }),
				copyFigure(mm2, func(c *copyRun) float64 { return mib(c.whole.peakRSS) }),
				copyFigure(pipe, func(c *copyRun) float64 { return mib(c.whole.peakRSS) })},
			row{"5. Backlog MB/s against the target's ingest ceiling (plain producer)", "higher", "%.1f",
				copyFigure(km, func(c *copyRun) float64 { return mbps(c.copied*recordSize, c.window) }),
				copyFigure(mm2, func(c *copyRun) float64 { return mbps(c.copied*recordSize, c.window) }),
				ingest},
		)
	}
	if len(r.steady) > 0 {
		for _, p := range []struct {
			label string
			pct   float64
		}{{"p50", 50}, {"p99", 99}, {"max", 100}} {
			get := func(tool string) figure {
				s := r.steadyRun(tool)
				if s == nil {
					return missing("")
				}
				if f, bad := steadyValid(s); bad {
					return f
				}
				return val(float64(percentile(s.lat, p.pct)) / float64(time.Millisecond))
			}
			rows = append(rows, row{fmt.Sprintf("2. Steady %.0f MB/s, end-to-end latency %s, ms", r.h.opts.steadyMBps, p.label), "lower", "%.1f",
				get(toolKmirror), get(toolMM2), get(toolPipe)})
		}
		get := func(tool string) figure {
			s := r.steadyRun(tool)
			if s == nil {
				return missing("")
			}
			if f, bad := steadyValid(s); bad {
				return f
			}
			return val(s.usage.cores())
		}
		rows = append(rows, row{fmt.Sprintf("2. Steady %.0f MB/s, replicator CPU, cores", r.h.opts.steadyMBps), "lower", "%.2f",
			get(toolKmirror), get(toolMM2), get(toolPipe)})
	}
	if len(r.startup) > 0 {
		first := func(tool string) figure {
			s := r.startupRun(tool)
			if s == nil {
				return missing("")
			}
			if s.toFirst == 0 {
				return missing("did not finish")
			}
			return val(s.toFirst.Seconds())
		}
		newTopic := func(tool string) figure {
			s := r.startupRun(tool)
			if s == nil {
				return missing("")
			}
			if len(s.newTopic) == 0 {
				return missing("did not finish")
			}
			return val(median(s.newTopic).Seconds())
		}
		rows = append(rows,
			row{"3. Start-up: process start → first record on target, s", "lower", "%.2f", first(toolKmirror), first(toolMM2), missing("")},
			row{"3. Start-up: new source topic → first record on target, s (median)", "lower", "%.2f", newTopic(toolKmirror), newTopic(toolMM2), missing("")},
		)
	}
	if len(r.many) > 0 {
		get := r.manyFigure
		parts := r.h.opts.manyPartitions / manyTopicSize * manyTopicSize
		rows = append(rows,
			row{fmt.Sprintf("4. %d partitions, light traffic: CPU, cores", parts), "lower", "%.3f",
				get(toolKmirror, func(m *manyRun) float64 { return m.window.cores() }), get(toolMM2, func(m *manyRun) float64 { return m.window.cores() }), missing("")},
			row{fmt.Sprintf("4. %d partitions, light traffic: peak RSS, MiB", parts), "lower", "%.0f",
				get(toolKmirror, func(m *manyRun) float64 { return mib(m.whole.peakRSS) }), get(toolMM2, func(m *manyRun) float64 { return mib(m.whole.peakRSS) }), missing("")},
			row{fmt.Sprintf("4. %d partitions: process start → every partition caught up, s", parts), "lower", "%.1f",
				get(toolKmirror, func(m *manyRun) float64 { return m.caughtUp.Seconds() }), get(toolMM2, func(m *manyRun) float64 { return m.caughtUp.Seconds() }), missing("")},
		)
	}
	rows = append(rows, r.offsetsRows()...)
	return rows
}

// copyFigure is a backlog figure of c, if c finished and was verified.
func copyFigure(c *copyRun, f func(*copyRun) float64) figure {
	switch {
	case c == nil:
		return missing("")
	case !c.complete:
		return missing(fmt.Sprintf("did not finish (%.0f%% copied)", percentCopied(c)))
	case !c.verify.ok:
		return figure{v: f(c), shown: true, note: "(" + c.verify.short() + ")"}
	}
	return val(f(c))
}

func percentCopied(c *copyRun) float64 {
	if c.want == 0 {
		return 0
	}
	return 100 * float64(c.copied) / float64(c.want)
}

// steadyValid returns a figure explaining why a steady run does not count,
// and true, if it does not.
func steadyValid(s *steadyRun) (figure, bool) {
	switch {
	case len(s.lat) == 0:
		return missing("did not finish"), true
	case s.err != "":
		return missing("incomplete"), true
	case !s.verify.ok:
		return missing(s.verify.short()), true
	}
	return figure{}, false
}

// failureNotes lists every run that did not finish or was not verified.
func (r *report) failureNotes() []string {
	var out []string
	if b := r.backlog; b != nil {
		for i, in := range b.ingests {
			if in.err != "" {
				out = append(out, fmt.Sprintf("Ceiling (target ingest), run %d, failed: %s", i+1, firstLine(in.err)))
			}
		}
		for _, c := range b.runs {
			switch {
			case !c.complete && c.total >= c.budget:
				out = append(out, fmt.Sprintf("Backlog run %d: %s did not finish within its time budget of %s: %d of %d records (%.0f%%) copied; it was not run again.", c.rep, c.tool, c.budget, c.copied, c.want, percentCopied(c)))
			case !c.complete:
				out = append(out, fmt.Sprintf("Backlog run %d: %s did not finish: %d of %d records (%.0f%%) copied in %s: %s", c.rep, c.tool, c.copied, c.want, percentCopied(c), c.total.Round(time.Second), firstLine(c.err)))
			case !c.verify.ok:
				out = append(out, fmt.Sprintf("Backlog run %d: %s's copy failed verification: %s. %s", c.rep, c.tool, c.verify, mdInline(c.verify.logNote)))
			}
		}
	}
	for _, s := range r.steady {
		if f, bad := steadyValid(s); bad {
			out = append(out, fmt.Sprintf("Steady state: %s: %s. %s %s", s.tool, f.note, firstLine(s.err), mdInline(s.verify.logNote)))
		}
	}
	for _, s := range r.startup {
		if s.err != "" || !s.verify.ok {
			out = append(out, fmt.Sprintf("Start-up: %s: %s %s. %s", s.tool, firstLine(s.err), s.verify, mdInline(s.verify.logNote)))
		}
	}
	for _, m := range r.many {
		if m.err != "" || !m.verify.ok {
			out = append(out, fmt.Sprintf("Many partitions: %s: %s %s. %s", m.tool, firstLine(m.err), m.verify, mdInline(m.verify.logNote)))
		}
	}
	if o := r.offsets; o != nil {
		if o.prepNote != "" {
			out = append(out, "Offset translation: "+o.prepNote+".")
		}
		for _, x := range o.runs {
			if x.err != "" {
				out = append(out, fmt.Sprintf("Offset translation: %s: %s", x.tool, firstLine(x.err)))
			}
		}
	}
	return out
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// copyRun returns tool's median backlog run: of its complete and verified
// runs, the one with the median MB/s over the copy (the lower of the two
// middle ones for an even count). If none counts, its last run.
func (r *report) copyRun(tool string) *copyRun {
	if r.backlog == nil {
		return nil
	}
	var good []*copyRun
	var last *copyRun
	for _, c := range r.backlog.runs {
		if c.tool != tool {
			continue
		}
		last = c
		if c.complete && c.verify.ok {
			good = append(good, c)
		}
	}
	if len(good) == 0 {
		return last
	}
	slices.SortFunc(good, func(a, b *copyRun) int { return cmp.Compare(a.window, b.window) })
	return good[len(good)/2]
}

// medianIngest returns the ingest ceiling's median run, or nil.
func (b *backlogResult) medianIngest() *ingestResult {
	var good []*ingestResult
	for _, in := range b.ingests {
		if in.err == "" {
			good = append(good, in)
		}
	}
	if len(good) == 0 {
		return nil
	}
	slices.SortFunc(good, func(a, b *ingestResult) int { return cmp.Compare(a.elapsed, b.elapsed) })
	return good[len(good)/2]
}

func (r *report) steadyRun(tool string) *steadyRun {
	for _, s := range r.steady {
		if s.tool == tool {
			return s
		}
	}
	return nil
}

func (r *report) startupRun(tool string) *startupRun {
	for _, s := range r.startup {
		if s.tool == tool {
			return s
		}
	}
	return nil
}

func (r *report) manyRun(tool string) *manyRun {
	for _, m := range r.many {
		if m.tool == tool {
			return m
		}
	}
	return nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// ---------------------------------------------------------------------
// Rendering.

func (r *report) render() string {
	var b bytes.Buffer
	o := r.h.opts
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	mode := "full run"
	if o.quick {
		mode = "quick smoke run (-quick): tiny scale, figures not meaningful"
	}
	w("# kmirror vs MirrorMaker 2: benchmark of %s\n\n", r.h.begin.Format("2006-01-02 15:04 MST"))
	w("Written by `go run ./bench` (%s).", mode)
	if r.total > 0 {
		w(" Total runtime: %s, from the command's start (build and broker start-up included) to this report.", r.total.Round(time.Second))
	} else {
		w(" **The run had not finished when this was written.**")
	}
	w("\n\n")

	w("## Machine\n\n| | |\n|---|---|\n")
	for _, kv := range r.machine {
		w("| %s | %s |\n", kv[0], mdEscape(kv[1]))
	}
	w("\nEverything runs on this one machine: the source broker, the target broker, the replicator under test and the bench's own producers and consumers share its cores. Only one replicator runs at a time. Load average (1, 5, 15 min) when this report was written: %s.\n\n", loadAvg())
	if o.note != "" {
		w("**Conditions of this run:** %s\n\n", o.note)
	}

	if rows := r.summaryRows(); len(rows) > 0 {
		w("## Summary\n\n")
		w("*kmirror/MM2* and *kmirror/ceiling* divide kmirror's figure by the other's; the *better* column says which way is better for kmirror. The ceiling is the bare franz-go pipe (bench/ceiling) except where the row names another.\n\n")
		w("| Figure | better | kmirror | MM2 | ceiling | kmirror/MM2 | kmirror/ceiling |\n|---|---|---:|---:|---:|---:|---:|\n")
		for _, rw := range rows {
			w("| %s | %s | %s | %s | %s | %s | %s |\n", rw.label, rw.better, rw.km.fmt(rw.format), rw.mm2.fmt(rw.format), rw.ceil.fmt(rw.format), ratio(rw.km, rw.mm2), ratio(rw.km, rw.ceil))
		}
		w("\nUnits: MB = 10^6 bytes and GB = 10^9 bytes of record values (1 KiB each; keys and the 8-byte time header are not counted); MiB = 2^20 bytes. CPU is user + system time of the replicator's process alone (the JVM for MM2), from /proc/<pid>/stat; memory is VmHWM/VmRSS from /proc/<pid>/status, sampled every 200 ms.\n\n")
	}
	if notes := append(r.failureNotes(), r.notes...); len(notes) > 0 {
		w("## Notes: what did not run or finish\n\n")
		for _, n := range notes {
			w("- %s\n", n)
		}
		w("\n")
	} else if r.total > 0 {
		w("Every scenario ran to the end for every replicator, and every copy was verified.\n\n")
	}

	r.renderEOS(w)
	r.renderBacklog(w)
	r.renderSteady(w)
	r.renderStartup(w)
	r.renderMany(w)
	r.renderOffsets(w)
	r.renderScaleOut(w)
	r.renderWAN(w)
	r.renderSettings(w)
	return b.String()
}

func (r *report) renderBacklog(w func(string, ...any)) {
	b := r.backlog
	if b == nil {
		return
	}
	w("## 1. Backlog catch-up\n\n")
	w("%d records of 1 KiB JSON events (%.2f GB) in topic `%s`, %d partitions, preloaded on the source before the replicator starts. ", b.records, float64(b.bytes)/1e9, backlogTopic, backlogPartitions)
	if b.preload > 0 {
		w("The preload took %s (%.0f MB/s). ", b.preload.Round(time.Millisecond), mbps(b.bytes, b.preload))
	}
	if b.diskBytes > 0 {
		w("With lz4 the topic takes %.0f MB on the source's disk: the events compress %.1f×.", float64(b.diskBytes)/1e6, float64(b.bytes)/float64(b.diskBytes))
	}
	w("\n\nEach replicator starts with an empty target and copies the whole topic; the bench polls the target's end offsets every %s until every partition equals the source's, then stops the replicator and checks the record count of every partition. *Start-up* is from process start to the first poll that shows a record on the target, *copy* from there to the first poll that shows every record; times are taken when a poll's answer arrives, so each is late by up to one poll interval. Throughput is given over both spans. Runs: %d of each tool, in turns (ingest ceiling, %s; then again), the target copy being deleted after each; the table gives each tool's median run by MB/s over the copy (of two runs, the slower), and all runs follow it.\n\n", backlogPoll, r.h.opts.backlogRuns, strings.Join(r.selectedTools(allTools), ", "))
	tools := r.columns(allTools)
	w("%s", tableHead(tools))
	var cols []*copyRun
	for _, t := range tools {
		cols = append(cols, r.copyRun(t))
	}
	line := func(label string, f func(*copyRun) string) {
		w("| %s |", label)
		for _, c := range cols {
			if c == nil {
				w(" — |")
				continue
			}
			w(" %s |", f(c))
		}
		w("\n")
	}
	line("run (of each tool's runs, the median)", func(c *copyRun) string { return fmt.Sprint(c.rep) })
	line("result", func(c *copyRun) string {
		switch {
		case !c.complete:
			return fmt.Sprintf("**did not finish**: %d of %d records (%.0f%%)", c.copied, c.want, percentCopied(c))
		case !c.verify.ok:
			return "**not verified**"
		}
		return "complete, verified"
	})
	line("start-up (process start → first record)", func(c *copyRun) string { return secs(c.startup) })
	line("copy (first record → all copied)", func(c *copyRun) string { return secs(c.window) })
	line("total (process start → all copied)", func(c *copyRun) string { return secs(c.total) })
	line("MB/s over the copy", func(c *copyRun) string { return fmt.Sprintf("%.1f", mbps(c.copied*recordSize, c.window)) })
	line("MB/s over the total", func(c *copyRun) string { return fmt.Sprintf("%.1f", mbps(c.copied*recordSize, c.total)) })
	line("CPU s, total", func(c *copyRun) string { return fmt.Sprintf("%.1f", c.whole.cpu.Seconds()) })
	line("CPU s per GB, total", func(c *copyRun) string { return fmt.Sprintf("%.1f", cpuPerGB(c.whole.cpu, c.copied*recordSize)) })
	line("CPU s per GB, copy only", func(c *copyRun) string { return fmt.Sprintf("%.1f", cpuPerGB(c.copying.cpu, c.copied*recordSize)) })
	line("average cores busy during the copy", func(c *copyRun) string { return fmt.Sprintf("%.2f", c.copying.cores()) })
	line("peak RSS, MiB", func(c *copyRun) string { return fmt.Sprintf("%.0f", mib(c.whole.peakRSS)) })
	line("copy on the target's disk, MB", func(c *copyRun) string { return fmt.Sprintf("%.0f", float64(c.targetDisk)/1e6) })
	line("verification", func(c *copyRun) string { return mdEscape(c.verify.String()) })
	if slices.ContainsFunc(tools, eos) {
		line("offsets of the copy that hold no record (transaction markers)", func(c *copyRun) string {
			if !eos(c.tool) || c.markers < 0 || !c.complete {
				return "—"
			}
			return fmt.Sprintf("%d (%.0f per partition)", c.markers, float64(c.markers)/backlogPartitions)
		})
	}
	w("\nAll runs:\n\n| run | replicator | result | start-up | copy | MB/s over the copy | MB/s over the total | CPU s per GB, total | peak RSS, MiB | load average (1 min), start → end |\n|---:|---|---|---:|---:|---:|---:|---:|---:|---|\n")
	for _, c := range b.runs {
		result := "complete, verified"
		switch {
		case !c.complete:
			result = fmt.Sprintf("**did not finish** (%.0f%%)", percentCopied(c))
		case !c.verify.ok:
			result = "**not verified**"
		}
		w("| %d | %s | %s | %s | %s | %.1f | %.1f | %.1f | %.0f | %s → %s |\n", c.rep, c.tool, result, secs(c.startup), secs(c.window),
			mbps(c.copied*recordSize, c.window), mbps(c.copied*recordSize, c.total), cpuPerGB(c.whole.cpu, c.copied*recordSize), mib(c.whole.peakRSS), c.load[0], c.load[1])
	}
	w("\n")
	for _, c := range b.runs {
		if c.err != "" {
			w("%s, run %d: %s\n\n", c.tool, c.rep, codeBlock(c.err))
		}
	}

	w("### 5. Ceilings\n\n")
	w("- **Bare pipe** (column *ceiling* above): bench/ceiling, one franz-go consumer and one franz-go producer in a process of their own, every record of every partition to the same partition of `pipe.%s`, with kmirror's producer and consumer settings and nothing else: no progress, no topic management, no metrics. It is what the two brokers and this machine allow a Go replicator to do.\n", backlogTopic)
	if in := b.medianIngest(); in != nil {
		var all []string
		for _, x := range b.ingests {
			if x.err == "" {
				all = append(all, fmt.Sprintf("%.1f", mbps(b.bytes, x.elapsed)))
			} else {
				all = append(all, "failed")
			}
		}
		w("- **Target ingest**: a plain franz-go producer in the bench process writing the same number of 1 KiB events (cycling over 20,000 pre-made ones) into a fresh %d-partition topic of the target, lz4, 1 MiB batches, 5 ms linger, acks=all: %.1f MB/s, the median of %d runs (%s MB/s; %.1f CPU s per GB in the bench process in the median run). It bounds what the target takes from one client; a replicator within a few percent of it, either way, is at the bound within this machine's run-to-run noise.\n",
			backlogPartitions, mbps(b.bytes, in.elapsed), len(b.ingests), strings.Join(all, ", "), cpuPerGB(in.cpu, b.bytes))
	} else if len(b.ingests) > 0 {
		w("- **Target ingest**: failed: %s\n", mdEscape(b.ingests[0].err))
	}
	w("\n")
	profile := func(tool, intro, top, note string) {
		if top == "" && note == "" {
			return
		}
		w("### %s CPU profile of its first backlog run\n\n%s\n\n", tool, intro)
		if top != "" {
			w("```\n%s\n```\n\n", top)
		} else {
			w("%s\n\n", note)
		}
	}
	profile("kmirror", "Written by kmirror itself (`KMIRROR_CPUPROFILE`) over the whole of its first backlog run; `go tool pprof -top -nodecount=25`. Profiling costs that run a few percent of its throughput.",
		b.profileTop, b.profileNote)
	profile("kmirror-eos", "The same for kmirror in exactly-once mode.", b.profileTopEOS, b.profileNoteEOS)
}

func (r *report) renderSteady(w func(string, ...any)) {
	if len(r.steady) == 0 {
		return
	}
	o := r.h.opts
	w("## 2. Steady state\n\n")
	w("A producer writes 1 KiB events into a fresh %d-partition source topic at a fixed %.0f MB/s (%.0f records/s) for %d s of warm-up and %d s of measurement, while the replicator runs (started first, and replicating: one record per partition went through before the producer starts). Each record carries its produce time in a header; a consumer on the target computes, for every record produced in the measurement period, the time from produce to consume. Every record is waited for, and the copy is verified. The latency includes the bench producer's 5 ms linger and the consumer's fetch: the bare pipe's column is the floor that brokers, producer and consumer set on this machine.\n\n",
		steadyPartitions, o.steadyMBps, o.steadyMBps*1e6/recordSize, o.warmupSeconds, o.steadySeconds)
	tools := r.columns(allTools)
	w("%s", tableHead(tools))
	var cols []*steadyRun
	for _, t := range tools {
		cols = append(cols, r.steadyRun(t))
	}
	line := func(label string, f func(*steadyRun) string) {
		w("| %s |", label)
		for _, s := range cols {
			if s == nil {
				w(" — |")
				continue
			}
			w(" %s |", f(s))
		}
		w("\n")
	}
	line("result", func(s *steadyRun) string {
		if fig, bad := steadyValid(s); bad {
			return "**" + fig.note + "**"
		}
		return "complete, verified"
	})
	line("records produced (warm-up + measurement)", func(s *steadyRun) string { return fmt.Sprint(s.produced) })
	line("producer's achieved rate, MB/s", func(s *steadyRun) string { return fmt.Sprintf("%.2f", s.achieved) })
	line("records measured", func(s *steadyRun) string { return fmt.Sprint(len(s.lat)) })
	for _, p := range []struct {
		l string
		v float64
	}{{"p50", 50}, {"p90", 90}, {"p99", 99}, {"p99.9", 99.9}, {"max", 100}} {
		line("latency "+p.l+", ms", func(s *steadyRun) string {
			if len(s.lat) == 0 {
				return "—"
			}
			return fmt.Sprintf("%.1f", float64(percentile(s.lat, p.v))/float64(time.Millisecond))
		})
	}
	line("worst seconds (by produce time from the start of measurement): largest latency", func(s *steadyRun) string { return worstString(s.worst) })
	line("replicator CPU during measurement, cores", func(s *steadyRun) string { return fmt.Sprintf("%.3f", s.usage.cores()) })
	line("replicator CPU s per GB during measurement", func(s *steadyRun) string {
		return fmt.Sprintf("%.1f", s.usage.cpu.Seconds()/math.Max(1e-9, o.steadyMBps*s.usage.wall.Seconds()/1e3))
	})
	line("peak RSS, MiB", func(s *steadyRun) string { return fmt.Sprintf("%.0f", mib(s.usage.peakRSS)) })
	line("machine load average (1 min), start → end of measurement", func(s *steadyRun) string { return s.load[0] + " → " + s.load[1] })
	line("verification", func(s *steadyRun) string { return mdEscape(s.verify.String()) })
	w("\n")
	for _, s := range cols {
		if s != nil && s.err != "" {
			w("%s: %s\n\n", s.tool, codeBlock(s.err))
		}
	}
}

func (r *report) renderStartup(w func(string, ...any)) {
	if len(r.startup) == 0 {
		return
	}
	w("## 3. Start-up\n\n")
	w("*Process start → first record*: a %d-partition source topic holds %d records; the clock starts when the replicator's process is started and stops when the target's end offsets (polled every 50 ms) show a record. *New topic → first record*: while the replicator runs, a new %d-partition topic is created on the source and written to at 50 records/s; the clock starts when the creation returned and stops at its first record on the target. Both tools look for new topics every %s (kmirror's default `topic_refresh_interval`; MM2's `refresh.topics.interval.seconds` lowered from its default 600 to the same). After the trials every topic is checked complete.\n\n",
		startupPartitions, 100*startupPartitions, startupPartitions, topicRefresh)
	tools := r.columns(replicators)
	w("%s", tableHead(tools))
	var cols []*startupRun
	for _, t := range tools {
		cols = append(cols, r.startupRun(t))
	}
	line := func(label string, f func(*startupRun) string) {
		w("| %s |", label)
		for _, s := range cols {
			if s == nil {
				w(" — |")
				continue
			}
			w(" %s |", f(s))
		}
		w("\n")
	}
	line("process start → first record on target", func(s *startupRun) string { return secs(s.toFirst) })
	line("new topic → first record on target, each trial", func(s *startupRun) string {
		var parts []string
		for _, d := range s.newTopic {
			parts = append(parts, secs(d))
		}
		if len(parts) == 0 {
			return "—"
		}
		return strings.Join(parts, ", ")
	})
	line("new topic → first record, median", func(s *startupRun) string {
		if len(s.newTopic) == 0 {
			return "—"
		}
		return secs(median(s.newTopic))
	})
	line("verification", func(s *startupRun) string { return mdEscape(s.verify.String()) })
	w("\n")
	for _, s := range cols {
		if s != nil && s.err != "" {
			w("%s: %s\n\n", s.tool, codeBlock(s.err))
		}
	}
}

func (r *report) renderMany(w func(string, ...any)) {
	if len(r.many) == 0 {
		return
	}
	o := r.h.opts
	w("## 4. Many partitions\n\n")
	w("%d topics of %d partitions (%d partitions), each holding 5 records at the start, then a producer writing %d records/s (%.1f MB/s) spread evenly over all of them. The replicator starts; once every partition has caught up with the source, CPU and memory are measured for %s; then the producer stops and the copy is checked complete. Each tool gets its own topics, deleted afterwards. MM2 keeps `tasks.max=%d`: one task per partition would be %d consumers and producers in one JVM.\n\n",
		o.manyPartitions/manyTopicSize, manyTopicSize, o.manyPartitions/manyTopicSize*manyTopicSize, o.manyRate, float64(o.manyRate)*recordSize/1e6, o.manyWindow,
		mm2Tasks, o.manyPartitions/manyTopicSize*manyTopicSize)
	tools := r.columns(replicators)
	w("%s", tableHead(tools))
	var cols []*manyRun
	for _, t := range tools {
		cols = append(cols, r.manyRun(t))
	}
	line := func(label string, f func(*manyRun) string) {
		w("| %s |", label)
		for _, m := range cols {
			if m == nil {
				w(" — |")
				continue
			}
			w(" %s |", f(m))
		}
		w("\n")
	}
	line("process start → every partition caught up", func(m *manyRun) string {
		if m.caughtUp == 0 {
			return "**did not finish**"
		}
		return secs(m.caughtUp)
	})
	line("CPU during the window, cores", func(m *manyRun) string { return fmt.Sprintf("%.3f", m.window.cores()) })
	line("CPU s, process start → end of window", func(m *manyRun) string { return fmt.Sprintf("%.1f", m.whole.cpu.Seconds()) })
	line("RSS at the end of the window, MiB", func(m *manyRun) string { return fmt.Sprintf("%.0f", mib(m.window.lastRSS)) })
	line("peak RSS, MiB", func(m *manyRun) string { return fmt.Sprintf("%.0f", mib(m.whole.peakRSS)) })
	line("records copied", func(m *manyRun) string { return fmt.Sprint(m.records) })
	line("machine load average (1 min), start → end of the window", func(m *manyRun) string { return m.load[0] + " → " + m.load[1] })
	line("verification", func(m *manyRun) string { return mdEscape(m.verify.String()) })
	w("\n")
	for _, m := range cols {
		if m != nil && m.err != "" {
			w("%s: %s\n\n", m.tool, codeBlock(m.err))
		}
	}
}

func (r *report) renderSettings(w func(string, ...any)) {
	h := r.h
	o := h.opts
	w("## Settings\n\n")
	w("Scale: `-backlog-gb %g -backlog-runs %d -steady-seconds %d -warmup-seconds %d -steady-mbps %g -many-partitions %d -many-rate %d -many-window %s -new-topic-trials %d -offsets-records %d -mm2-budget %s`.\n\n",
		o.backlogGB, o.backlogRuns, o.steadySeconds, o.warmupSeconds, o.steadyMBps, o.manyPartitions, o.manyRate, o.manyWindow, o.newTopicTrials, o.offsetsRecords, o.mm2Budget)
	w("### Replicators\n\n")
	w("Every scenario run gets fresh state: its own kmirror flow name (so its own progress topic), its own MM2 Connect group and internal topics. The configurations below are those of the first backlog run; the other runs differ only in `name`/`topics` (kmirror) and `source->target.topics`, `target.group.id` and the `*.storage.topic` names (MM2).\n\n")
	km := toolRun{id: "backlog-km-1", topics: backlogTopic}
	mm := toolRun{id: "backlog-mm2-1", topics: backlogTopic}
	pipe := toolRun{id: "backlog-pipe", topicList: []string{backlogTopic}}
	if h.src != nil && h.tgt != nil {
		w("**kmirror** — `kmirror run --config kmirror.yaml`, built with `go build ./cmd/kmirror`. Every key is written out, most at its default:\n\n```yaml\n%s```\n\n", h.kmirrorConfig(km))
		w("**MirrorMaker 2** — dedicated mode, `java %s -cp 'libs/*' org.apache.kafka.connect.mirror.MirrorMaker mm2.properties` (the heap of bin/connect-mirror-maker.sh and the GC flags of bin/kafka-run-class.sh), Kafka %s's connect-mirror and connect-runtime jars. Tuned for throughput as its documentation advises: `tasks.max` equal to the backlog's partition count, kmirror's batch size, linger and compression, kmirror's fetch sizes. The producer keeps Connect's delivery settings (acks=all, one request in flight per connection, not idempotent; each task has a producer of its own). In development trials on this machine, `enable.idempotence=true` with 5 requests in flight was not faster (70 against 96 MB/s on a 0.5 GB backlog) and left partitions of topics MM2 had just created stuck, retrying OUT_OF_ORDER_SEQUENCE_NUMBER forever; `max.poll.records=10000` instead of 500 made no difference (97 against 96 MB/s). Heartbeats, checkpoints, group offset sync and ACL sync are off, as kmirror has none of them; topic config sync stays on. Note that Java's `batch.size` bounds a batch's compressed size, franz-go's `batch_max_bytes` the uncompressed size.\n\n```properties\n%s```\n\n",
			strings.Join(mm2JVMFlags(), " "), h.env.kafkaVersion, formatProps("MirrorMaker 2 configuration of bench run "+mm.id, h.mm2Props(mm)))
		if h.selected(toolKmirrorEOS) {
			w("**kmirror-eos** — the same, with the flow in exactly-once mode (the source read read_committed, as exactly_once requires):\n\n```yaml\n%s```\n\n",
				h.kmirrorConfig(toolRun{id: "backlog-kmeos-1", topics: backlogTopic, eos: true}))
		}
		if h.selected(toolMM2EOS) {
			w("**MM2-eos** — the same as MM2, plus (the REST port is a free port found at each launch):\n\n```properties\n%s```\n\n",
				formatProps("MirrorMaker 2 exactly-once settings", mm2EOSProps(0)))
		}
		w("**Bare pipe** (ceiling) — `%s`\n\n", "ceiling "+strings.Join(h.pipeArgs(pipe), " "))
		w("### Brokers\n\n")
		w("Two single-node KRaft clusters (combined broker and controller), Kafka %s, started by the bench as `java %s -cp 'libs/*' kafka.Kafka server.properties` with data on the local disk under bench/work/. The source's server.properties (the target's differs only in ports and directory):\n\n```properties\n%s```\n\n",
			h.env.kafkaVersion, strings.Join(brokerJVMFlags(), " "),
			// Paths are given from the repository root: the report names no machine.
			strings.ReplaceAll(string(formatProps("source broker", h.src.b.props)), h.env.root+"/", ""))
	}
	w("### Load\n\n")
	w("Records: key `user-<n>`, value a JSON event of exactly 1024 bytes (ids, sequence number, timestamp, enumerations such as event type, country, device and currency, 1–3 order items, a user agent, a page path, and free text made of sentences from ten templates with numbers and words filled in; padded with spaces to exactly 1 KiB), one header `%s` with the produce time. Producers of the bench: franz-go, lz4, 1 MiB batches, 5 ms linger, acks=all, idempotent, records spread round-robin over partitions.\n", tsHeader)
}

func secs(d time.Duration) string {
	if d <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

// mdEscape keeps a value on one table cell.
func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}

// mdInline renders a log line as inline code, or nothing for "".
func mdInline(s string) string {
	if s == "" {
		return ""
	}
	return "`" + strings.ReplaceAll(s, "`", "'") + "`"
}

// codeBlock renders s as a fenced block.
func codeBlock(s string) string {
	return "\n\n```\n" + strings.TrimRight(s, "\n") + "\n```"
}

// columns are the tools of a scenario's table: the at-least-once tools
// always (as before the exactly-once modes were added), an exactly-once
// one if it was selected.
func (r *report) columns(of []string) []string {
	var out []string
	for _, t := range of {
		if !eos(t) || r.h.selected(t) {
			out = append(out, t)
		}
	}
	return out
}

// toolLabel is a tool's column heading.
func toolLabel(tool string) string {
	if tool == toolPipe {
		return "ceiling (pipe)"
	}
	return tool
}

// tableHead is the heading of a table with a column per tool.
func tableHead(tools []string) string {
	var b strings.Builder
	b.WriteString("| |")
	for _, t := range tools {
		b.WriteString(" " + toolLabel(t) + " |")
	}
	b.WriteString("\n|---|")
	for range tools {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	return b.String()
}

// selectedTools are the tools of of that were selected, in that order.
func (r *report) selectedTools(of []string) []string {
	var out []string
	for _, t := range of {
		if r.h.selected(t) {
			out = append(out, t)
		}
	}
	return out
}
