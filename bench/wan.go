package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// ---------------------------------------------------------------------
// Scenario "wan" (not run by default): the backlog copied over a long
// link, an emulated round-trip time and bandwidth between the replicator
// and the source, then between the replicator and the target.

const wanTopic = "wan"

// Sides of the replicator a long link can be on.
const (
	sideSource = "source"
	sideTarget = "target"
)

// wanOptions are the scale and the links of the long-links scenario.
type wanOptions struct {
	gb    float64
	rtts  []time.Duration // the round-trip times of the link; RTT 0 (no link) always runs too
	sides []string        // sideSource, sideTarget
	mbit  int64           // the link's bandwidth, Mbit/s; 0 is unlimited
	// window, if positive, adds on each side a condition at the longest
	// round-trip time whose connections have at most this many bytes in
	// flight per direction (a TCP window).
	window int
	runs   int
	budget time.Duration
	// variants are more kmirror runs under every condition, each with
	// settings of its own over the bench's ("kmirror-<name>").
	variants []kmirrorVariant
}

// wanFlagSet holds the scenario's flags until they are parsed.
type wanFlagSet struct {
	gb                    *float64
	rtts, sides, variants *string
	mbit                  *int64
	window, runs          *int
	budget                *time.Duration
}

func registerWANFlags(fs *flag.FlagSet) *wanFlagSet {
	return &wanFlagSet{
		gb:       fs.Float64("wan-gb", 1, "wan scenario: backlog size in GB of 1 KiB records"),
		rtts:     fs.String("wan-rtts", "50ms,150ms", "wan scenario: round-trip times of the emulated link (RTT 0, no link, always runs as the reference)"),
		sides:    fs.String("wan-sides", "source,target", "wan scenario: where the link is: between the replicator and the source, the target, or each in turn"),
		mbit:     fs.Int64("wan-mbit", 1000, "wan scenario: the link's bandwidth in each direction, Mbit/s (0: unlimited)"),
		window:   fs.Int("wan-window", 0, "wan scenario: also run, on each side at the longest RTT, a link that allows this many bytes in flight per connection and direction, as a TCP window (0: not run)"),
		runs:     fs.Int("wan-runs", 1, "wan scenario: runs of every replicator under every condition; the report gives each one's median"),
		budget:   fs.Duration("wan-budget", 5*time.Minute, "wan scenario: time a replicator gets for one copy"),
		variants: fs.String("wan-kmirror-variants", "", "wan scenario: also run kmirror with other settings, as name:key=value,...;name:... (keys as -kmirror-set); each is reported as kmirror-<name>"),
	}
}

func (f *wanFlagSet) parse(quick bool) (wanOptions, error) {
	o := wanOptions{gb: *f.gb, mbit: *f.mbit, window: *f.window, runs: *f.runs, budget: *f.budget}
	if quick {
		o.gb = 0.1
	}
	for _, s := range strings.Split(*f.rtts, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil || d <= 0 {
			return o, fmt.Errorf("-wan-rtts: %q is not a positive duration", s)
		}
		o.rtts = append(o.rtts, d)
	}
	for _, s := range strings.Split(*f.sides, ",") {
		s = strings.TrimSpace(s)
		if s != sideSource && s != sideTarget {
			return o, fmt.Errorf("-wan-sides: %q is neither source nor target", s)
		}
		if !slices.Contains(o.sides, s) {
			o.sides = append(o.sides, s)
		}
	}
	if o.gb <= 0 || o.mbit < 0 || o.window < 0 || o.runs < 1 || o.budget <= 0 {
		return o, errors.New("-wan-gb, -wan-runs and -wan-budget must be positive, -wan-mbit and -wan-window not negative")
	}
	var err error
	if o.variants, err = parseKmirrorVariants(*f.variants); err != nil {
		return o, fmt.Errorf("-wan-kmirror-variants: %w", err)
	}
	return o, nil
}

// wanCondition is where the link is and what it is like; side "" is no
// link at all (RTT 0).
type wanCondition struct {
	side  string
	shape linkShape
}

func (c wanCondition) String() string {
	if c.side == "" {
		return "RTT 0 (no link)"
	}
	return fmt.Sprintf("%s side, %s", c.side, c.shape)
}

// slug names the condition in run ids.
func (c wanCondition) slug() string {
	if c.side == "" {
		return "0"
	}
	s := fmt.Sprintf("%s%d", c.side[:3], c.shape.rtt.Milliseconds())
	if c.shape.window > 0 {
		s += "w" + strconv.Itoa(c.shape.window>>10)
	}
	return s
}

// wanVariant is one replicator of the scenario: a tool, and for a kmirror
// variant the settings it runs with.
type wanVariant struct {
	label string // as reported
	tool  string
	set   map[string]string
	slug  string // names its runs; slug(tool) if empty
}

// kmirrorVariant is a named set of kmirror settings.
type kmirrorVariant struct {
	name string
	set  map[string]string
}

// parseKmirrorVariants parses "name:key=value,...;name:...".
func parseKmirrorVariants(s string) ([]kmirrorVariant, error) {
	var out []kmirrorVariant
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	for _, part := range strings.Split(s, ";") {
		name, kvs, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok || name == "" || strings.ContainsAny(name, " ,=") {
			return nil, fmt.Errorf("%q is not name:key=value[,key=value]", part)
		}
		set, err := parseKmirrorSet(kvs)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if slices.ContainsFunc(out, func(v kmirrorVariant) bool { return v.name == name }) {
			return nil, fmt.Errorf("%s named twice", name)
		}
		out = append(out, kmirrorVariant{name: name, set: set})
	}
	return out, nil
}

// wanVariants are the scenario's replicators in the order they run.
func (h *harness) wanVariants() []wanVariant {
	var out []wanVariant
	if h.selected(toolKmirror) {
		out = append(out, wanVariant{label: toolKmirror, tool: toolKmirror})
		for i, kv := range h.opts.wan.variants {
			out = append(out, wanVariant{label: toolKmirror + "-" + kv.name, tool: toolKmirror, set: kv.set, slug: fmt.Sprintf("km%d", i+1)})
		}
	}
	for _, t := range []string{toolMM2, toolPipe} {
		if h.selected(t) {
			out = append(out, wanVariant{label: t, tool: t})
		}
	}
	return out
}

// wanConditions are the conditions in the order they run: no link, then
// each side with each round-trip time.
func (h *harness) wanConditions() []wanCondition {
	o := h.opts.wan
	conds := []wanCondition{{}}
	for _, side := range o.sides {
		for _, rtt := range o.rtts {
			conds = append(conds, wanCondition{side: side, shape: linkShape{rtt: rtt, bitsPerSec: o.mbit * 1e6}})
		}
		if o.window > 0 {
			conds = append(conds, wanCondition{side: side, shape: linkShape{rtt: slices.Max(o.rtts), bitsPerSec: o.mbit * 1e6, window: o.window}})
		}
	}
	return conds
}

// wanResult is the outcome of the long-links scenario.
type wanResult struct {
	records   int64
	diskBytes int64
	preload   time.Duration
	runs      []*wanRun
}

// wanRun is one copy of the backlog over one condition.
type wanRun struct {
	*copyRun
	label string
	cond  wanCondition
	// up and down are the bytes the link carried towards the broker and
	// towards the replicator over the whole run (start-up included).
	up, down int64
	// benchCPU is the bench process's CPU time over the copy: mostly the
	// link's proxy.
	benchCPU time.Duration
}

func (h *harness) runWAN(ctx context.Context) error {
	o := h.opts.wan
	res := &wanResult{}
	h.report.wan = res
	res.records = int64(o.gb*1e9/recordSize+backlogPartitions-1) / backlogPartitions * backlogPartitions
	if err := h.src.createTopics(ctx, backlogPartitions, wanTopic); err != nil {
		return err
	}
	h.logf("wan: preloading %d records (%.2f GB) into %s", res.records, float64(res.records*recordSize)/1e9, wanTopic)
	prod, err := kgo.NewClient(producerOpts(h.src.b.bootstrap())...)
	if err != nil {
		return fmt.Errorf("creating the preload producer: %w", err)
	}
	res.preload, err = produceCount(ctx, prod, newEventGen(8), partitionsOf([]string{wanTopic}, backlogPartitions), res.records)
	prod.Close()
	if err != nil {
		return fmt.Errorf("preloading the wan backlog: %w", err)
	}
	if res.diskBytes, err = h.src.b.topicDiskBytes(wanTopic); err != nil {
		return err
	}
	want, err := h.src.endOffsets(ctx, wanTopic)
	if err != nil {
		return err
	}
	if got := want.total(); got != res.records {
		return fmt.Errorf("source holds %d records after the preload, want %d", got, res.records)
	}
	h.checkpoint()

	skip := map[string]bool{} // variant and condition that ran out of time: not run again
	for rep := 1; rep <= o.runs; rep++ {
		for _, cond := range h.wanConditions() {
			for _, v := range h.wanVariants() {
				key := v.label + "/" + cond.slug()
				if skip[key] {
					continue
				}
				r, err := h.copyOverLink(ctx, v, cond, want, rep)
				if r != nil {
					res.runs = append(res.runs, r)
					if !r.complete {
						skip[key] = true
					}
				}
				if err != nil {
					return err
				}
				h.checkpoint()
			}
		}
	}
	return nil
}

// linkOf is the link on side.
func (h *harness) linkOf(side string) *wanLink {
	switch side {
	case sideSource:
		return h.srcLink
	case sideTarget:
		return h.tgtLink
	}
	return nil
}

// copyOverLink runs variant v on the wan backlog under cond until the
// copy is complete or the budget ends, then stops it, verifies the copy
// and deletes it. An error is returned only for faults of the harness.
func (h *harness) copyOverLink(ctx context.Context, v wanVariant, cond wanCondition, want offsets, rep int) (*wanRun, error) {
	r := &wanRun{copyRun: &copyRun{tool: v.tool, rep: rep, budget: h.opts.wan.budget}, label: v.label, cond: cond}
	names := targetNames(v.tool, []string{wanTopic})
	// A kmirror variant writes the topic kmirror wrote just before, deleted
	// since: a broker may still answer with its offsets for a moment.
	if err := h.tgt.waitNoOffsets(ctx, names[wanTopic]); err != nil {
		return nil, err
	}
	if v.tool == toolPipe {
		if err := h.tgt.createTopics(ctx, backlogPartitions, names[wanTopic]); err != nil {
			return nil, err
		}
	}
	slugLabel := slug(v.tool)
	if v.slug != "" {
		slugLabel = v.slug
	}
	run := toolRun{
		id:     fmt.Sprintf("wan-%s-%s-%d", slugLabel, cond.slug(), rep),
		topics: wanTopic, topicList: []string{wanTopic},
		wan: true, kmirrorSet: v.set,
	}
	link := h.linkOf(cond.side)
	if link != nil {
		link.setShape(cond.shape)
		defer link.setShape(linkShape{}) // cut what is left of the run's connections
		if cond.side == sideSource {
			run.srcBootstrap = link.addr()
		} else {
			run.tgtBootstrap = link.addr()
		}
	}
	r.load[0] = loadAvg1()
	h.logf("wan: %s over %s (budget %s; load average %s)", v.label, cond, r.budget, r.load[0])
	cpu0, _ := readProc(os.Getpid())
	l, err := h.launch(v.tool, run)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := h.tgt.deleteTopicsAndWait(context.WithoutCancel(ctx), names[wanTopic]); err != nil {
			h.logf("deleting %s: %v", names[wanTopic], err)
		}
	}()
	w := &copyWatch{src: h.src, tgt: h.tgt, names: names, want: want, watched: l, poll: backlogPoll}
	cr, werr := w.wait(ctx, l.started.Add(r.budget))
	w.close()
	end := time.Now()
	if !cr.complete.IsZero() {
		end = cr.complete
	}
	cpu1, _ := readProc(os.Getpid())
	r.benchCPU = cpu1.cpu - cpu0.cpu
	if link != nil {
		r.up, r.down = link.bytes()
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
		h.logf("%s: %v", v.label, werr)
	}
	h.stopTool(l)
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	if r.complete {
		h.logf("wan: %s over %s: complete in %s (first record after %s): %.0f MB/s, %.1f CPU s/GB, peak RSS %.0f MiB; link %.0f MB up, %.0f MB down",
			v.label, cond, r.total.Round(time.Millisecond), r.startup.Round(time.Millisecond), mbps(r.copied*recordSize, r.window),
			cpuPerGB(r.whole.cpu, r.copied*recordSize), mib(r.whole.peakRSS), float64(r.up)/1e6, float64(r.down)/1e6)
	}
	vr, err := verifyCopy(ctx, h.src, h.tgt, names, false)
	if err != nil {
		return r, err
	}
	if !vr.ok {
		vr.logNote = logProblems(l.logPath)
	}
	r.verify = vr
	h.logf("%s: %s", v.label, vr)
	return r, nil
}

// String names the run for logs and notes.
func (r *wanRun) String() string {
	return r.label + " over " + r.cond.String() + ", run " + strconv.Itoa(r.rep)
}

// waitNoOffsets waits until the cluster lists no offsets of topic (it was
// deleted, and the broker has dropped its partitions), for at most 30 s.
func (c *cluster) waitNoOffsets(ctx context.Context, topic string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		got, err := c.endOffsets(ctx, topic)
		if err == nil && len(got[topic]) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s on %s still has offsets: %w", topic, c.name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
