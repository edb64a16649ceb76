package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/verify/flowverify"
)

// Exit codes of verify.
const (
	verifyDiffers = 1 // a difference was found
	verifyFailed  = 2 // bad input, a cluster that does not answer, a read that failed
)

func newVerifyCommand() *cobra.Command {
	var path, flowName, topics string
	var since time.Duration
	var fromOffset int64
	var asJSON bool
	var parallel int
	cmd := &cobra.Command{
		Use:   "verify --config FILE --flow NAME [--topics REGEX] [--since DURATION | --from-offset N] [--json]",
		Short: "Prove a flow's target holds exactly what its source holds",
		Long: `Verify compares every topic of a flow with its copy on the target, partition
by partition, record by record (key, value, headers, timestamp), over the range
the flow replicated: from the source's log start (or --since, --from-offset)
to the position the flow stored. The flow's offset map says which target record
each source record became, so compaction, transaction markers, aborted records
and records provenance keeps off the target are not differences.

It only reads, from both clusters, and works whether "kmirror run" runs or
not; stop the flow first for a verdict on everything it copied. --json prints
one JSON document (see docs/verify.md).

Exit codes: 0 when the target matches, 1 on a difference (each named with its
topic, partition, source and target offset and what differs), 2 on an error
(configuration, a cluster that does not answer, a read that failed).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" || flowName == "" {
				return exitError{verifyFailed, errors.New("--config and --flow are required")}
			}
			if since > 0 && fromOffset >= 0 {
				return exitError{verifyFailed, errors.New("--since and --from-offset exclude each other")}
			}
			if since < 0 {
				return exitError{verifyFailed, errors.New("--since must be positive")}
			}
			cfg, err := config.Load(path)
			if err != nil {
				return exitError{verifyFailed, err}
			}
			fc, err := cfg.Flow(flowName)
			if err != nil {
				return exitError{verifyFailed, err}
			}
			o := flowverify.Options{Since: since, FromOffset: fromOffset, Parallel: parallel,
				Logger: newLogger(logConfig(cmd, config.Log{Level: "error", Format: "text"}))}
			if topics != "" {
				re, err := regexp.Compile("^(?:" + topics + ")$")
				if err != nil {
					return exitError{verifyFailed, fmt.Errorf("--topics: %w", err)}
				}
				o.Topics = re
			}
			stopBar := func() {}
			if isTerminal(os.Stderr) {
				bar := newProgressBar(os.Stderr)
				stopBar = bar.stop
				o.Progress = bar.add
			}
			rep, err := flowverify.VerifyFlow(cmd.Context(), cfg, fc, o)
			stopBar()
			if err != nil {
				return exitError{verifyFailed, err}
			}
			if asJSON {
				err = writeJSON(cmd.OutOrStdout(), rep)
			} else {
				err = writeVerifyText(cmd.OutOrStdout(), rep)
			}
			if err != nil {
				return exitError{verifyFailed, err}
			}
			if !rep.Equal {
				n := rep.Totals.Differences()
				return exitError{verifyDiffers, fmt.Errorf("flow %q: %d records differ; first: %s", rep.Flow, n, rep.Differences[0])}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "configuration file (YAML)")
	cmd.Flags().StringVar(&flowName, "flow", "", "name of the flow")
	cmd.Flags().StringVar(&topics, "topics", "", "only the source topics this regex fully matches")
	cmd.Flags().DurationVar(&since, "since", 0, "only records written at most this long ago (e.g. 24h)")
	cmd.Flags().Int64Var(&fromOffset, "from-offset", -1, "only source offsets from N on, in every partition")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON document")
	cmd.Flags().IntVar(&parallel, "parallel", 4, "partitions compared at once")
	return cmd
}

// writeVerifyText prints one table row per topic, then the differences.
func writeVerifyText(out io.Writer, rep *flowverify.FlowReport) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "flow %s: %s -> %s\n", rep.Flow, rep.Source, rep.Target)
	fmt.Fprintln(w, "TOPIC\tTARGET TOPIC\tPARTITIONS\tSOURCE RECORDS\tMATCHED\tMISSING\tEXTRA/DUPLICATED\tALTERED\tNOT COPIED\tCOMPACTED")
	for _, t := range rep.Topics {
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", t.Topic, t.TargetTopic, t.Partitions, t.SourceRecords,
			t.Matched, t.Missing, t.Extra, t.Altered, t.NotCopied, t.Compacted)
	}
	c := rep.Totals
	fmt.Fprintf(w, "TOTAL\t\t\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", c.SourceRecords, c.Matched, c.Missing, c.Extra, c.Altered, c.NotCopied, c.Compacted)
	if err := w.Flush(); err != nil {
		return err
	}
	for _, t := range rep.Topics {
		if t.Note != "" {
			fmt.Fprintf(out, "note: %s: %s\n", t.Topic, t.Note)
		}
		for _, p := range t.Details {
			if p.Note != "" {
				fmt.Fprintf(out, "note: %s/%d: %s\n", t.Topic, p.Partition, p.Note)
			}
		}
	}
	for _, d := range rep.Differences {
		fmt.Fprintln(out, d)
	}
	secs := float64(rep.ElapsedMs) / 1000
	mb := float64(c.Bytes) / 1e6
	rate := 0.0
	if secs > 0 {
		rate = mb / secs
	}
	verdict := "EQUAL: the target matches the source"
	if !rep.Equal {
		verdict = fmt.Sprintf("DIFFERENT: %d records differ", c.Differences())
	}
	if !rep.CleanStop {
		verdict += " (the flow runs or did not stop cleanly: the target past its stored positions was not compared)"
	}
	_, err := fmt.Fprintf(out, "%s; %d source records compared, %.1f MB read in %.1fs (%.1f MB/s)\n", verdict, c.SourceRecords, mb, secs, rate)
	return err
}

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progressBar draws the share of source offsets passed on a terminal.
type progressBar struct {
	out         io.Writer
	total, done atomic.Int64
	start       time.Time
	quit        chan struct{}
	wg          sync.WaitGroup
}

func newProgressBar(out io.Writer) *progressBar {
	b := &progressBar{out: out, start: time.Now(), quit: make(chan struct{})}
	b.wg.Go(func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-b.quit:
				return
			case <-t.C:
				b.draw()
			}
		}
	})
	return b
}

func (b *progressBar) add(total, step int64) {
	if total > 0 {
		b.total.Store(total)
	}
	b.done.Add(step)
}

func (b *progressBar) draw() {
	total, done := b.total.Load(), b.done.Load()
	if total <= 0 {
		return
	}
	const width = 30
	n := min(int(done*width/total), width)
	bar := make([]byte, width)
	for i := range bar {
		bar[i] = ' '
		if i < n {
			bar[i] = '='
		}
	}
	rate := float64(done) / max(time.Since(b.start).Seconds(), 0.001)
	fmt.Fprintf(b.out, "\rverifying [%s] %3d%% %d/%d offsets, %.0f/s ", bar, done*100/total, done, total, rate)
}

func (b *progressBar) stop() {
	close(b.quit)
	b.wg.Wait()
	if b.total.Load() > 0 {
		b.draw()
		fmt.Fprintln(b.out)
	}
}
