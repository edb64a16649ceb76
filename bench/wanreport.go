package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Goals of kmirror on a long link, at the longest round-trip time.
const (
	wanGoalKeep = 0.8 // MB/s at least this share of its own at RTT 0
	wanGoalMM2  = 5.0 // MB/s at least this many times MM2's
)

// wanMedian is the median run of variant label under cond by MB/s over
// the copy among its complete runs, else its last run; nil if none ran.
func (res *wanResult) median(label string, cond wanCondition) *wanRun {
	var done, all []*wanRun
	for _, r := range res.runs {
		if r.label != label || r.cond != cond {
			continue
		}
		all = append(all, r)
		if r.complete {
			done = append(done, r)
		}
	}
	if len(done) == 0 {
		if len(all) == 0 {
			return nil
		}
		return all[len(all)-1]
	}
	slices.SortFunc(done, func(a, b *wanRun) int {
		return cmpFloat(wanRate(a), wanRate(b))
	})
	return done[len(done)/2]
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// wanRate is a run's MB/s over the copy, 0 if it did not complete.
func wanRate(r *wanRun) float64 {
	if r == nil || !r.complete {
		return 0
	}
	return mbps(r.copied*recordSize, r.window)
}

// wanRatio renders a/b, or – without both.
func wanRatio(a, b float64) string {
	if a <= 0 || b <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// linkRate is the average rate of the link's data direction over the
// copy, Mbit/s: towards the replicator on the source side, towards the
// broker on the target side.
func linkRate(r *wanRun) string {
	if r.cond.side == "" || r.window <= 0 {
		return "–"
	}
	b := r.down
	if r.cond.side == sideTarget {
		b = r.up
	}
	return fmt.Sprintf("%.0f", float64(b)*8/1e6/r.window.Seconds())
}

// wanResultCell is a run's outcome for a table cell.
func wanResultCell(r *wanRun) string {
	switch {
	case r.complete && r.verify.ok:
		return "complete, verified"
	case r.complete:
		return "complete, " + r.verify.short()
	}
	return fmt.Sprintf("incomplete: %.1f%% copied", 100*float64(r.copied)/float64(max(r.want, 1)))
}

func (r *report) renderWAN(w func(string, ...any)) {
	res := r.wan
	if res == nil {
		return
	}
	o := r.h.opts.wan
	w("## Long links: the backlog over an emulated WAN link\n\n")
	w("%d records of 1 KiB JSON events (%.2f GB, the backlog's data) in topic `%s`, %d partitions, preloaded on the source in %s",
		res.records, float64(res.records*recordSize)/1e9, wanTopic, backlogPartitions, secs(res.preload))
	if res.diskBytes > 0 {
		w(" (%.0f MB on disk with lz4, %.1f× smaller)", float64(res.diskBytes)/1e6, float64(res.records*recordSize)/float64(res.diskBytes))
	}
	w(". Each replicator copies it with no link (RTT 0: straight to both brokers, as in the backlog scenario), then with the link between it and the source, then between it and the target, at each round-trip time; %d run(s) of each, one replicator at a time, the target copy deleted after each run and every copy verified partition by partition.\n\n", o.runs)
	w("The link is a TCP proxy in the bench process (bench/wanproxy.go) in front of a second listener of the broker, `WAN`, which advertises the proxy's address, so that every connection the replicator opens to that cluster, including those to the addresses it learns from metadata, crosses the link; the bench's own clients use the other listener. ")
	w("Each direction is a delay line of half the round-trip time: bytes read from one end at time *t* are written to the other at *t* + RTT/2 plus the time the link's bandwidth takes to carry them, later bytes following behind, so a stream is limited by the bandwidth, not by the round trip. ")
	if o.mbit > 0 {
		w("Bandwidth: %s in each direction, shared by all connections through the link. ", bitRate(o.mbit*1e6))
	} else {
		w("Bandwidth: unlimited. ")
	}
	w("A new connection's first bytes wait one round trip (the TCP handshake). ")
	w("TCP windows are not emulated: the two halves of every connection run over loopback, so the socket buffers of the replicator and the broker never limit what is in flight (on a real link they do unless they are at least the bandwidth-delay product: see docs/tuning.md)")
	if o.window > 0 {
		w(", except in the rows marked *window*: there each connection has at most %d bytes (%.0f KiB) in flight per direction, acknowledged half a round trip after they were delivered, as a TCP window of that size (the smaller of the sender's send buffer and the receiver's receive buffer) allows", o.window, float64(o.window)/1024)
	}
	w(". ")
	w("Packet loss is not emulated either: this machine's kernel has no netem queueing discipline, and a user-space proxy cannot lose segments faithfully (over loopback a lost segment is recovered in microseconds, not in round trips of the emulated link).\n\n")
	w("*MB/s* is over the copy (first record on the target → all copied), *vs RTT 0* divides it by the same replicator's without a link, *kmirror/MM2* by MM2's under the same condition. CPU is the replicator process's, process start → all copied; *link Mbit/s* the average rate of the link's busy direction (towards the replicator on the source side, towards the target) over the copy; *bench CPU* the bench process's CPU over the run, mostly the proxy (the bench also polls the target's offsets every %s).\n\n", backlogPoll)

	base := map[string]float64{}
	for _, v := range r.h.wanVariants() {
		base[v.label] = wanRate(res.median(v.label, wanCondition{}))
	}
	for _, side := range o.sides {
		w("### Link between the replicator and the %s\n\n", side)
		w("| RTT | replicator | result | start-up | copy | MB/s | vs RTT 0 | kmirror/MM2 | CPU s per GB | peak RSS, MiB | link Mbit/s | bench CPU s | load average (start, end) |\n|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
		conds := []wanCondition{{}}
		for _, c := range r.h.wanConditions() {
			if c.side == side {
				conds = append(conds, c)
			}
		}
		for _, c := range conds {
			mm2 := wanRate(res.median(toolMM2, c))
			for _, v := range r.h.wanVariants() {
				run := res.median(v.label, c)
				if run == nil {
					continue
				}
				rate := wanRate(run)
				vsMM2 := "–"
				if v.tool == toolKmirror {
					vsMM2 = wanRatio(rate, mm2)
				}
				w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %.0f | %s | %.1f | %s, %s |\n",
					rttCell(c), v.label, wanResultCell(run), secs(run.startup), secs(run.window), rateCell(rate), wanRatio(rate, base[v.label]), vsMM2,
					cpuCell(run), mib(run.whole.peakRSS), linkRate(run), run.benchCPU.Seconds(), run.load[0], run.load[1])
			}
		}
		w("\n")
	}
	r.renderWANGoals(w, base)
	if o.runs > 1 {
		w("All runs:\n\n| run | condition | replicator | result | start-up | copy | MB/s |\n|---:|---|---|---|---:|---:|---:|\n")
		for _, run := range res.runs {
			w("| %d | %s | %s | %s | %s | %s | %s |\n", run.rep, run.cond, run.label, wanResultCell(run), secs(run.startup), secs(run.window), rateCell(wanRate(run)))
		}
		w("\n")
	}
	for _, run := range res.runs {
		if run.err != "" {
			// Paths are given from the repository root: the report names no machine.
			w("%s: %s\n\n", run, codeBlock(strings.ReplaceAll(run.err, r.h.env.root+"/", "")))
		} else if !run.verify.ok {
			w("%s: %s\n\n", run, mdEscape(run.verify.String()))
		}
	}
	r.renderWANSettings(w)
}

// renderWANGoals says whether kmirror met its goals at the longest
// round-trip time on each side.
func (r *report) renderWANGoals(w func(string, ...any), base map[string]float64) {
	res, o := r.wan, r.h.opts.wan
	if len(o.rtts) == 0 {
		return
	}
	longest := slices.Max(o.rtts)
	var lines []string
	for _, side := range o.sides {
		c := wanCondition{side: side, shape: linkShape{rtt: longest, bitsPerSec: o.mbit * 1e6}}
		mm2 := wanRate(res.median(toolMM2, c))
		for _, v := range r.h.wanVariants() {
			if v.tool != toolKmirror {
				continue
			}
			rate := wanRate(res.median(v.label, c))
			if rate == 0 {
				continue
			}
			keep, vs := "–", "–"
			if base[v.label] > 0 {
				keep = fmt.Sprintf("%.2f× (%s)", rate/base[v.label], metOrNot(rate/base[v.label] >= wanGoalKeep))
			}
			if mm2 > 0 {
				vs = fmt.Sprintf("%.2f× (%s)", rate/mm2, metOrNot(rate/mm2 >= wanGoalMM2))
			}
			lines = append(lines, fmt.Sprintf("| %s | %s | %.1f | %s | %s |", side, v.label, rate, keep, vs))
		}
	}
	if len(lines) == 0 {
		return
	}
	w("### Goals at RTT %s\n\nkmirror should keep at least %.1f× its MB/s without a link and copy at least %.0f× as fast as MM2, with the link on either side.\n\n", longest, wanGoalKeep, wanGoalMM2)
	w("| link side | replicator | MB/s | vs RTT 0 (goal ≥ %.1f×) | kmirror/MM2 (goal ≥ %.0f×) |\n|---|---|---:|---:|---:|\n%s\n\n", wanGoalKeep, wanGoalMM2, strings.Join(lines, "\n"))
}

func metOrNot(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}

func rttCell(c wanCondition) string {
	if c.side == "" {
		return "0"
	}
	s := fmt.Sprintf("%d ms", c.shape.rtt/time.Millisecond)
	if c.shape.window > 0 {
		s += fmt.Sprintf(", window %.0f KiB", float64(c.shape.window)/1024)
	}
	return s
}

func rateCell(v float64) string {
	if v <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", v)
}

func cpuCell(r *wanRun) string {
	if r.copied == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", cpuPerGB(r.whole.cpu, r.copied*recordSize))
}

// renderWANSettings lists what the scenario's replicators ran with.
func (r *report) renderWANSettings(w func(string, ...any)) {
	h := r.h
	if h.src == nil || h.tgt == nil || h.srcLink == nil {
		return
	}
	o := h.opts.wan
	w("### Settings of the long-links runs\n\n")
	w("Flags: `-wan-gb %g -wan-rtts %s -wan-sides %s -wan-mbit %d -wan-window %d -wan-runs %d -wan-budget %s`",
		o.gb, durations(o.rtts), strings.Join(o.sides, ","), o.mbit, o.window, o.runs, o.budget)
	if len(o.variants) > 0 {
		var vs []string
		for _, v := range o.variants {
			vs = append(vs, v.name+":"+formatSet(v.set))
		}
		w(" `-wan-kmirror-variants '%s'`", strings.Join(vs, ";"))
	}
	if len(h.opts.kmirrorSet) > 0 {
		w(" `-kmirror-set %s`", formatSet(h.opts.kmirrorSet))
	}
	w(".\n\n")
	run := toolRun{id: "wan-km-sou150-1", topics: wanTopic, topicList: []string{wanTopic}, wan: true, srcBootstrap: h.srcLink.addr()}
	w("**kmirror**, with the link on the source side (on the target side `target.bootstrap_servers` names the link instead; without a link both name the brokers):\n\n```yaml\n%s```\n\n", h.kmirrorConfig(run))
	for _, v := range o.variants {
		w("**kmirror-%s**: the same with `%s` (\"default\": the key is left out, kmirror's own default applies):\n\n```yaml\n%s```\n\n", v.name, formatSet(v.set), kmirrorClientYAML("read_uncommitted", h.opts.kmirrorSet, v.set))
	}
	w("**MirrorMaker 2**: the backlog scenario's configuration (see Settings) with the links' bootstrap servers and these settings for high latency, in every run of this scenario (without a link too, so that *vs RTT 0* compares like with like):\n\n```properties\n%s```\n\n",
		formatProps("MirrorMaker 2 settings for links of high latency", mm2WANProps()))
	w("**Bare pipe**: as in the backlog scenario, with the links' bootstrap servers.\n\n")
	w("**Brokers**: each has a second plaintext client listener, `WAN`, on a port of its own, advertised at its link's address (`listeners=...,WAN://127.0.0.1:<port>`, `advertised.listeners=...,WAN://<link>`, `listener.security.protocol.map=...,WAN:PLAINTEXT`).\n\n")
}

func durations(ds []time.Duration) string {
	var out []string
	for _, d := range ds {
		out = append(out, d.String())
	}
	return strings.Join(out, ",")
}

// formatSet renders settings as key=value,... in kmirrorSettable order.
func formatSet(set map[string]string) string {
	var out []string
	for _, k := range kmirrorSettable {
		if v, ok := set[k]; ok {
			out = append(out, k+"="+v)
		}
	}
	return strings.Join(out, ",")
}
