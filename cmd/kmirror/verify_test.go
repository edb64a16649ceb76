package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kmirror/kmirror/internal/verify"
	"github.com/kmirror/kmirror/internal/verify/flowverify"
)

func TestVerifyExitCodes(t *testing.T) {
	dir := t.TempDir()
	// Port 1 refuses connections at once.
	unreachable := filepath.Join(dir, "unreachable.yaml")
	if err := os.WriteFile(unreachable, []byte(`clusters:
  a: {bootstrap_servers: ["127.0.0.1:1"], dial_timeout: 300ms}
  b: {bootstrap_servers: ["127.0.0.1:1"], dial_timeout: 300ms}
flows:
  - {name: ab, source: a, target: b}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no flow", []string{"verify", "--config", unreachable}, "--config and --flow are required"},
		{"missing file", []string{"verify", "--config", filepath.Join(dir, "nope.yaml"), "--flow", "ab"}, "nope.yaml"},
		{"unknown flow", []string{"verify", "--config", unreachable, "--flow", "xy"}, `no flow named "xy"`},
		{"since and from-offset", []string{"verify", "--config", unreachable, "--flow", "ab", "--since", "1h", "--from-offset", "5"}, "exclude each other"},
		{"bad regex", []string{"verify", "--config", unreachable, "--flow", "ab", "--topics", "("}, "--topics"},
		{"unreachable source", []string{"verify", "--config", unreachable, "--flow", "ab"}, `cluster "a" (127.0.0.1:1) unreachable`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := execute(t, tc.args...)
			if got := exitCode(err); got != verifyFailed {
				t.Fatalf("exit code %d, want %d (err: %v)", got, verifyFailed, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestWriteVerifyText(t *testing.T) {
	rep := &flowverify.FlowReport{Flow: "f", Source: "a", Target: "b", CleanStop: true, ElapsedMs: 1000,
		Totals: verify.Counts{SourceRecords: 10, Matched: 9, Missing: 1, Bytes: 2_000_000},
		Topics: []flowverify.TopicResult{{Topic: "t", TargetTopic: "a.t", Partitions: 2, Counts: verify.Counts{SourceRecords: 10, Matched: 9, Missing: 1},
			Details: []verify.PartitionResult{{Partition: 1, Note: "nothing replicated yet (no offset map)"}}}},
		Differences: []verify.Difference{{Topic: "t", TargetTopic: "a.t", Partition: 0, Kind: verify.KindMissing, SourceOffset: 3, TargetOffset: 3, Detail: "not on the target"}},
	}
	var b bytes.Buffer
	if err := writeVerifyText(&b, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"TOPIC  TARGET TOPIC  PARTITIONS  SOURCE RECORDS  MATCHED  MISSING  EXTRA/DUPLICATED  ALTERED",
		"t      a.t           2           10              9        1        0                 0",
		"note: t/1: nothing replicated yet (no offset map)",
		`missing: topic "t" partition 0 source offset 3 (target "a.t" offset 3): not on the target`,
		"DIFFERENT: 1 records differ; 10 source records compared, 2.0 MB read in 1.0s (2.0 MB/s)",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
}

func TestProgressBar(t *testing.T) {
	var b bytes.Buffer
	bar := &progressBar{out: &b, start: time.Now(), quit: make(chan struct{})}
	bar.add(200, 0)
	bar.add(0, 100)
	bar.draw()
	if want := "\rverifying [===============               ]  50% 100/200 offsets"; !strings.HasPrefix(b.String(), want) {
		t.Errorf("bar %q, want it to start with %q", b.String(), want)
	}
}
