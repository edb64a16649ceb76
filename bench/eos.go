package main

import (
	"fmt"
	"time"
)

// The exactly-once comparison: each exactly-once mode against the same
// replicator at least once, and kmirror's against MM2's.

// eosMetric is one figure of the comparison, for any tool.
type eosMetric struct {
	label, better, format string
	get                   func(tool string) figure
}

func (r *report) eosMetrics() []eosMetric {
	var ms []eosMetric
	if r.backlog != nil {
		backlog := func(f func(*copyRun) float64) func(string) figure {
			return func(tool string) figure { return copyFigure(r.copyRun(tool), f) }
		}
		ms = append(ms,
			eosMetric{"1. Backlog catch-up, MB/s (first record on target → all copied)", "higher", "%.1f",
				backlog(func(c *copyRun) float64 { return mbps(c.copied*recordSize, c.window) })},
			eosMetric{"1. Backlog catch-up, MB/s (process start → all copied)", "higher", "%.1f",
				backlog(func(c *copyRun) float64 { return mbps(c.copied*recordSize, c.total) })},
			eosMetric{"1. Backlog catch-up, CPU s per GB (process start → all copied)", "lower", "%.1f",
				backlog(func(c *copyRun) float64 { return cpuPerGB(c.whole.cpu, c.copied*recordSize) })},
			eosMetric{"1. Backlog catch-up, CPU s per GB (copy only)", "lower", "%.1f",
				backlog(func(c *copyRun) float64 { return cpuPerGB(c.copying.cpu, c.copied*recordSize) })},
			eosMetric{"1. Backlog catch-up, peak RSS, MiB", "lower", "%.0f",
				backlog(func(c *copyRun) float64 { return mib(c.whole.peakRSS) })},
		)
	}
	if len(r.steady) > 0 {
		for _, p := range []struct {
			label string
			pct   float64
		}{{"p50", 50}, {"p99", 99}, {"max", 100}} {
			ms = append(ms, eosMetric{fmt.Sprintf("2. Steady %.0f MB/s, end-to-end latency %s, ms", r.h.opts.steadyMBps, p.label), "lower", "%.1f",
				func(tool string) figure {
					return r.steadyFigure(tool, func(s *steadyRun) float64 {
						return float64(percentile(s.lat, p.pct)) / float64(time.Millisecond)
					})
				}})
		}
		ms = append(ms, eosMetric{fmt.Sprintf("2. Steady %.0f MB/s, replicator CPU, cores", r.h.opts.steadyMBps), "lower", "%.2f",
			func(tool string) figure {
				return r.steadyFigure(tool, func(s *steadyRun) float64 { return s.usage.cores() })
			}})
	}
	if len(r.startup) > 0 {
		ms = append(ms, eosMetric{"3. Start-up: process start → first record on target, s", "lower", "%.2f",
			func(tool string) figure {
				s := r.startupRun(tool)
				if s == nil || s.toFirst == 0 {
					return missing("")
				}
				return val(s.toFirst.Seconds())
			}})
	}
	if len(r.many) > 0 {
		parts := r.h.opts.manyPartitions / manyTopicSize * manyTopicSize
		ms = append(ms,
			eosMetric{fmt.Sprintf("4. %d partitions, light traffic: CPU, cores", parts), "lower", "%.3f",
				func(tool string) figure {
					return r.manyFigure(tool, func(m *manyRun) float64 { return m.window.cores() })
				}},
			eosMetric{fmt.Sprintf("4. %d partitions, light traffic: RSS at the end of the window, MiB", parts), "lower", "%.0f",
				func(tool string) figure {
					return r.manyFigure(tool, func(m *manyRun) float64 { return mib(m.window.lastRSS) })
				}},
			eosMetric{fmt.Sprintf("4. %d partitions, light traffic: peak RSS, MiB", parts), "lower", "%.0f",
				func(tool string) figure {
					return r.manyFigure(tool, func(m *manyRun) float64 { return mib(m.whole.peakRSS) })
				}},
			eosMetric{fmt.Sprintf("4. %d partitions: process start → every partition caught up, s", parts), "lower", "%.1f",
				func(tool string) figure {
					return r.manyFigure(tool, func(m *manyRun) float64 { return m.caughtUp.Seconds() })
				}},
		)
	}
	return ms
}

// steadyFigure is a figure of tool's steady-state run, if it counts.
func (r *report) steadyFigure(tool string, f func(*steadyRun) float64) figure {
	s := r.steadyRun(tool)
	if s == nil {
		return missing("")
	}
	if fig, bad := steadyValid(s); bad {
		return fig
	}
	return val(f(s))
}

// manyFigure is a figure of tool's many-partitions run.
func (r *report) manyFigure(tool string, f func(*manyRun) float64) figure {
	m := r.manyRun(tool)
	if m == nil {
		return missing("")
	}
	if m.caughtUp == 0 {
		return missing("did not finish")
	}
	fig := val(f(m))
	if !m.verify.ok {
		fig.note = "(" + m.verify.short() + ")"
		fig.ok, fig.shown = false, true
	}
	return fig
}

// renderEOS writes the exactly-once comparison, if an exactly-once tool
// ran.
func (r *report) renderEOS(w func(string, ...any)) {
	if !r.h.selected(toolKmirrorEOS) && !r.h.selected(toolMM2EOS) {
		return
	}
	ms := r.eosMetrics()
	if len(ms) == 0 {
		return
	}
	o := r.h.opts
	w("## Exactly-once against at-least-once\n\n")
	w("*kmirror-eos* is kmirror with `exactly_once: true` (`transaction_interval: %s`, `transaction_max_bytes: %d`; the source read read_committed, which exactly_once requires), *MM2-eos* MirrorMaker 2 with exactly-once source support enabled on the target (`target.exactly.once.source.support=enabled`, `dedicated.mode.enable.internal.rest=true`, the source read read_committed); the at-least-once columns are the same replicators as configured everywhere else in this report. ",
		o.kmirrorTxnInterval, o.kmirrorTxnMaxBytes)
	w("For the exactly-once tools every copy is followed and checked as a read_committed consumer sees it: the bench polls the target's last stable offsets, and once they reach the source's end offsets a read_committed consumer counts the records of every partition (the offsets also count the transactions' commit markers); the copy is complete at the first poll whose last stable offsets covered the last record of every partition. The steady-state latency of the exactly-once tools is measured by a read_committed consumer: a record counts when its transaction has committed. Ratios divide the first-named tool's figure by the second's.\n\n")
	w("| Figure | better | kmirror | kmirror-eos | kmirror-eos/kmirror | MM2 | MM2-eos | MM2-eos/MM2 | kmirror-eos/MM2-eos |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, m := range ms {
		km, kme, mm, mme := m.get(toolKmirror), m.get(toolKmirrorEOS), m.get(toolMM2), m.get(toolMM2EOS)
		w("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", m.label, m.better,
			km.fmt(m.format), kme.fmt(m.format), ratio(kme, km),
			mm.fmt(m.format), mme.fmt(m.format), ratio(mme, mm), ratio(kme, mme))
	}
	w("\n")

	// The product's goals for kmirror's exactly-once mode.
	if r.backlog == nil && len(r.steady) == 0 {
		return
	}
	w("Goals for kmirror's exactly-once mode: throughput at least 0.9× the at-least-once throughput; p99 latency at most the transaction interval (%s) above the at-least-once p99.\n\n", o.kmirrorTxnInterval)
	if r.backlog != nil {
		km, kme := r.copyRun(toolKmirror), r.copyRun(toolKmirrorEOS)
		f := func(c *copyRun) float64 { return mbps(c.copied*recordSize, c.window) }
		a, b := copyFigure(km, f), copyFigure(kme, f)
		if a.ok && b.ok {
			verdict := "met"
			if b.v/a.v < 0.9 {
				verdict = "**not met**"
			}
			w("- Throughput (backlog, MB/s over the copy, median runs): kmirror-eos %.1f against kmirror %.1f, %.2f×: %s. Every run: kmirror %s; kmirror-eos %s.\n",
				b.v, a.v, b.v/a.v, verdict, r.runRates(toolKmirror), r.runRates(toolKmirrorEOS))
		} else {
			w("- Throughput: no ratio (a backlog run of kmirror or kmirror-eos did not count).\n")
		}
	}
	if len(r.steady) > 0 {
		p99 := func(s *steadyRun) float64 { return float64(percentile(s.lat, 99)) / float64(time.Millisecond) }
		p50 := func(s *steadyRun) float64 { return float64(percentile(s.lat, 50)) / float64(time.Millisecond) }
		a, b := r.steadyFigure(toolKmirror, p99), r.steadyFigure(toolKmirrorEOS, p99)
		c, d := r.steadyFigure(toolKmirror, p50), r.steadyFigure(toolKmirrorEOS, p50)
		if a.ok && b.ok {
			verdict := "met"
			limit := float64(o.kmirrorTxnInterval) / float64(time.Millisecond)
			if b.v-a.v > limit {
				verdict = "**not met**"
			}
			w("- Latency (steady state): p99 kmirror-eos %.1f ms against kmirror %.1f ms, %+.1f ms (goal: at most +%.0f ms): %s. p50 %.1f ms against %.1f ms, %+.1f ms.\n",
				b.v, a.v, b.v-a.v, limit, verdict, d.v, c.v, d.v-c.v)
		} else {
			w("- Latency: no comparison (a steady-state run of kmirror or kmirror-eos did not count).\n")
		}
	}
	w("\n")
}

// runRates lists the MB/s over the copy of every backlog run of tool.
func (r *report) runRates(tool string) string {
	out := ""
	for _, c := range r.backlog.runs {
		if c.tool != tool {
			continue
		}
		if out != "" {
			out += ", "
		}
		switch {
		case !c.complete:
			out += "did not finish"
		case !c.verify.ok:
			out += fmt.Sprintf("%.1f (not verified)", mbps(c.copied*recordSize, c.window))
		default:
			out += fmt.Sprintf("%.1f", mbps(c.copied*recordSize, c.window))
		}
	}
	if out == "" {
		return "none"
	}
	return out + " MB/s"
}
