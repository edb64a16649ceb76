package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestKcatInterop has kcat (librdkafka) write records into the source with
// duplicate and empty headers, NULL and empty keys and values, every
// compression codec and a transaction, runs kmirror, then reads both
// clusters with kcat and checks that the target holds the same records,
// partition by partition, in the same order, with the same key, value,
// headers and timestamp.
func TestKcatInterop(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	kcat := requireKcat(t)
	p := startPair(t)
	const topic = "interop"
	createTopic(t, p.srcCl, topic, 3, nil)

	// kcat sets the same headers on every record of one run and takes the
	// timestamp from the clock, so each run is a batch of its own.
	batches := []struct {
		partition int
		args      []string
		input     string
	}{
		{0, []string{"-K:", "-H", "k1=v1", "-H", "k1=v2", "-H", "other=x", "-z", "gzip"},
			"a:1\nb:2\nc:\n:empty-key\nd:value with spaces, commas = and | pipes\n"},
		{1, []string{"-K:", "-Z", "-H", "empty=", "-z", "snappy"},
			"e:\nf:6\n:null-key\nnokey-delimiter\n"},
		{2, []string{"-K:", "-X", "compression.codec=zstd", "-X", "transactional.id=kmirror-e2e-kcat"},
			"g:in a transaction\nh:also in it\n"},
		{0, []string{"-z", "lz4", "-H", "ct=text/plain"},
			"no key, lz4\nanother\n"},
		{1, nil, strings.Repeat("uncompressed\n", 3)},
	}
	for _, b := range batches {
		args := append([]string{"-b", p.src.Bootstrap(), "-P", "-t", topic, "-p", strconv.Itoa(b.partition)}, b.args...)
		runKcat(t, kcat, b.input, args...)
	}

	src := kcatRead(t, kcat, p.src.Bootstrap(), topic)
	var total int
	for _, rs := range src {
		total += len(rs)
	}
	if total != 5+4+2+2+3 {
		t.Fatalf("kcat read %d records from the source, want %d", total, 5+4+2+2+3)
	}

	// The shapes the comparison is meant to cover are really there.
	shapes := map[string]int{}
	for _, rs := range src {
		for _, r := range rs {
			switch {
			case r.keyLen < 0:
				shapes["NULL key"]++
			case r.keyLen == 0:
				shapes["empty key"]++
			}
			switch {
			case r.valueLen < 0:
				shapes["NULL value"]++
			case r.valueLen == 0:
				shapes["empty value"]++
			}
			if strings.Count(r.header, "k1=") == 2 {
				shapes["duplicate header key"]++
			}
			if r.header == "empty=" {
				shapes["empty header value"]++
			}
		}
	}
	for _, s := range []string{"NULL key", "empty key", "NULL value", "empty value", "duplicate header key", "empty header value"} {
		if shapes[s] == 0 {
			t.Errorf("no source record with a %s: kcat did not produce what the test expects", s)
		}
	}
	t.Logf("kcat wrote %d records to the source: %v", total, shapes)

	startedAt := time.Now()
	httpAddr := freeAddr(t)
	cfg := writeConfig(t, p.flowConfig(httpAddr, `topics: ["interop"]`))
	k := startKmirror(t, cfg, httpAddr)
	waitFor(t, 60*time.Second, "every record to reach the target", func() (bool, string) {
		de := endOffsets(t, p.dstCl, "src."+topic)
		return sum(de) >= int64(total), fmt.Sprintf("target end offsets %v, want %d records", de, total)
	})
	dst := kcatRead(t, kcat, p.dst.Bootstrap(), "src."+topic)
	t.Logf("kcat read %d records back from the target %s after kmirror started", total, time.Since(startedAt).Round(time.Millisecond))

	for part := int32(0); part < 3; part++ {
		s, d := src[part], dst[part]
		if len(s) != len(d) {
			t.Errorf("partition %d: source has %d records, target %d", part, len(s), len(d))
		}
		for i := 0; i < len(s) && i < len(d); i++ {
			if !s[i].sameAs(d[i]) {
				t.Errorf("partition %d record %d differs:\nsource %s\ntarget %s", part, i, s[i], d[i])
			}
			if ts := time.UnixMilli(d[i].ts); !ts.Before(startedAt) {
				t.Errorf("partition %d record %d: target timestamp %s is not the source's (kmirror started at %s)", part, i, ts, startedAt)
			}
		}
	}

	// Caught up, kmirror must report no lag on any partition, including
	// partition 2, whose last offset holds the transaction's commit marker
	// (a control record, which consumers never receive).
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body, err := k.get("/metrics")
		var lags []string
		ok := err == nil
		for part := 0; part < 3; part++ {
			v, found := outageMetric(body, fmt.Sprintf(`kmirror_partition_lag_records{flow="e2e",partition="%d",topic=%q}`, part, topic))
			ok = ok && found && v == 0
			lags = append(lags, fmt.Sprintf("p%d=%v", part, v))
		}
		st, err := flowTotals(k)
		if ok && err == nil && st.Lag == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("kmirror still reports lag 10s after the target caught up: kmirror_partition_lag_records %v, /api/flows lag %d (%v); "+
				"the source end offsets %v include transaction markers, which are not records to copy", lags, st.Lag, err, endOffsets(t, p.srcCl, topic))
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	k.stop()
}

// requireKcat returns the path of kcat, or skips the test without it
// (fails it when KMIRROR_REQUIRE_KAFKA=1, as in CI).
func requireKcat(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"kcat", "kafkacat"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	msg := "kcat not found on PATH (Debian/Ubuntu: apt-get install kcat); it is needed to test interoperability with librdkafka clients"
	if os.Getenv("KMIRROR_REQUIRE_KAFKA") == "1" {
		t.Fatal(msg + " (KMIRROR_REQUIRE_KAFKA=1)")
	}
	t.Skip(msg)
	return ""
}

// runKcat runs kcat with args and input on stdin, and fails the test if it
// fails or complains.
func runKcat(t *testing.T, kcat, input string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kcat, args...)
	cmd.Stdin = strings.NewReader(input)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kcat %s: %v\nstderr: %s", strings.Join(args, " "), err, stderr.String())
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		t.Logf("kcat %s: stderr: %s", strings.Join(args, " "), s)
	}
	return stdout.String()
}

// kcatRecord is one record as kcat prints it.
type kcatRecord struct {
	offset             int64
	ts                 int64
	keyLen, valueLen   int // -1 for NULL
	key, value, header string
}

func (r kcatRecord) sameAs(o kcatRecord) bool {
	return r.ts == o.ts && r.keyLen == o.keyLen && r.valueLen == o.valueLen &&
		r.key == o.key && r.value == o.value && r.header == o.header
}

func (r kcatRecord) String() string {
	return fmt.Sprintf("offset=%d ts=%d key(%d)=%q value(%d)=%q headers=%q", r.offset, r.ts, r.keyLen, r.key, r.valueLen, r.value, r.header)
}

// kcatRead reads topic from the beginning to its end with kcat, by
// partition in offset order.
func kcatRead(t *testing.T, kcat, bootstrap, topic string) map[int32][]kcatRecord {
	t.Helper()
	// Fields are separated by \x1f and records by \x1e, which no record
	// contains; lengths tell NULL (-1) from empty (0).
	out := runKcat(t, kcat, "", "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
		"-f", `%p\x1f%o\x1f%T\x1f%K\x1f%S\x1f%k\x1f%s\x1f%h\x1e`)
	recs := map[int32][]kcatRecord{}
	for _, raw := range strings.Split(out, "\x1e") {
		if raw == "" || raw == "\n" {
			continue
		}
		f := strings.Split(raw, "\x1f")
		if len(f) != 8 {
			t.Fatalf("kcat printed %q: %d fields, want 8", raw, len(f))
		}
		var r kcatRecord
		var part int64
		var err error
		for i, dst := range []*int64{&part, &r.offset, &r.ts} {
			if *dst, err = strconv.ParseInt(f[i], 10, 64); err != nil {
				t.Fatalf("kcat printed %q: field %d: %v", raw, i, err)
			}
		}
		if r.keyLen, err = strconv.Atoi(f[3]); err != nil {
			t.Fatalf("kcat printed %q: key length: %v", raw, err)
		}
		if r.valueLen, err = strconv.Atoi(f[4]); err != nil {
			t.Fatalf("kcat printed %q: value length: %v", raw, err)
		}
		r.key, r.value, r.header = f[5], f[6], f[7]
		recs[int32(part)] = append(recs[int32(part)], r)
	}
	for part, rs := range recs {
		for i := 1; i < len(rs); i++ {
			if rs[i].offset <= rs[i-1].offset {
				t.Fatalf("kcat printed partition %d out of order: %v", part, rs)
			}
		}
	}
	return recs
}
