package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		err  string
	}{
		{in: "536870912", want: 512 << 20},
		{in: "1_048_576", want: 1 << 20},
		{in: "512MiB", want: 512 << 20},
		{in: "512 MiB", want: 512 << 20},
		{in: "512mib", want: 512 << 20},
		{in: "512Mi", want: 512 << 20},
		{in: "1.5GiB", want: 3 << 29},
		{in: "2GiB", want: 2 << 30},
		{in: "1TiB", want: 1 << 40},
		{in: "64KiB", want: 64 << 10},
		{in: "800MB", want: 800_000_000},
		{in: "0.1GB", want: 100_000_000},
		{in: "2gb", want: 2_000_000_000},
		{in: "100B", want: 100},
		{in: "1.0000001B", want: 1},
		{in: "512M", err: "ambiguous unit"},
		{in: "2g", err: "ambiguous unit"},
		{in: "512XB", err: "invalid syntax"},
		{in: "MiB", err: "invalid syntax"},
		{in: "1.2.3MiB", err: "invalid syntax"},
		{in: "-1MiB", err: "invalid syntax"},
		{in: "", err: "invalid syntax"},
		{in: ".", err: "invalid syntax"},
		{in: "99999999999TiB", err: "out of range"},
	} {
		got, err := parseSize(tt.in)
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("parseSize(%q) = %d, %v; want error %q", tt.in, got, err, tt.err)
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("parseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestMemoryLimit(t *testing.T) {
	for _, tt := range []struct {
		name string
		data string
		env  map[string]string
		want int64
		line int
		errs []string
	}{
		{name: "unset", data: flow, want: 0},
		{name: "MiB", data: flow + "memory_limit: 512MiB\n", want: 512 << 20, line: 9},
		{name: "bytes", data: "memory_limit: 1073741824\n" + flow, want: 1 << 30, line: 1},
		{name: "decimal", data: flow + "memory_limit: 2 GB\n", want: 2e9, line: 9},
		{name: "env", data: flow + "memory_limit: ${MEM:-768MiB}\n", want: 768 << 20, line: 9},
		{name: "env set", data: flow + "memory_limit: ${MEM}\n", env: map[string]string{"MEM": "1Gi"}, want: 1 << 30, line: 9},
		{name: "ambiguous", data: flow + "memory_limit: 512M\n",
			errs: []string{`kmirror.yaml:9: memory_limit: ambiguous unit in "512M"; expected MiB (1024-based) or MB (1000-based)`}},
		{name: "not a size", data: flow + "memory_limit: lots\n",
			errs: []string{`kmirror.yaml:9: memory_limit: expected a size such as 512MiB (a number of bytes, or with a unit: KiB, MiB, GiB, TiB or KB, MB, GB, TB), got "lots"`}},
		{name: "too small", data: flow + "memory_limit: 64MiB\n",
			errs: []string{`kmirror.yaml:9: memory_limit: expected a size between 128MiB and 1024TiB, got 64MiB`}},
		{name: "too large", data: flow + "memory_limit: 2000TiB\n",
			errs: []string{`kmirror.yaml:9: memory_limit: expected a size between 128MiB and 1024TiB, got 2000TiB`}},
		{name: "overflow", data: flow + "memory_limit: 99999999999TiB\n",
			errs: []string{`kmirror.yaml:9: memory_limit: expected a size of at most 1024TiB, got "99999999999TiB"`}},
		{name: "empty", data: flow + "memory_limit:\n",
			errs: []string{`kmirror.yaml:9: memory_limit: expected a size such as 512MiB (a number of bytes, or with a unit: KiB, MiB, GiB, TiB or KB, MB, GB, TB), got an empty value`}},
		{name: "list", data: flow + "memory_limit: [1]\n",
			errs: []string{`kmirror.yaml:9: memory_limit: expected a size such as 512MiB (a number of bytes, or with a unit: KiB, MiB, GiB, TiB or KB, MB, GB, TB), got a list`}},
		{name: "env value hidden", data: flow + "memory_limit: ${MEM}\n", env: map[string]string{"MEM": "12 parsecs"},
			errs: []string{`kmirror.yaml:9: memory_limit: expected a size such as 512MiB (a number of bytes, or with a unit: KiB, MiB, GiB, TiB or KB, MB, GB, TB), got "${MEM}"`}},
		{name: "env unset", data: flow + "memory_limit: ${MEM}\n",
			errs: []string{`kmirror.yaml:9: memory_limit: environment variable MEM is not set; expected it to be set, or a default such as ${MEM:-value}`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("kmirror.yaml", []byte(tt.data), envOf(tt.env))
			if tt.errs != nil {
				if err == nil {
					t.Fatalf("no error; want %q", tt.errs)
				}
				if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, tt.errs) {
					t.Fatalf("error:\n%s\nwant:\n%s", err, strings.Join(tt.errs, "\n"))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MemoryLimit != tt.want || cfg.MemoryLimitLine != tt.line {
				t.Errorf("MemoryLimit = %d (line %d), want %d (line %d)", cfg.MemoryLimit, cfg.MemoryLimitLine, tt.want, tt.line)
			}
		})
	}
}

func TestExplicitSizes(t *testing.T) {
	data := flow + `    producer:
      batch_max_bytes: 2048
      max_buffered_bytes: 1_000_000
    consumer:
      fetch_max_partition_bytes: 65536
  - source: dr
    target: primary
`
	cfg, err := Parse("kmirror.yaml", []byte(data), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{KeyMaxBufferedBytes: 11, KeyFetchMaxPartitionBytes: 13}
	if got := cfg.Flows[0].Explicit; !reflect.DeepEqual(got, want) {
		t.Errorf("Explicit = %v, want %v", got, want)
	}
	if !cfg.Flows[0].IsExplicit(KeyMaxBufferedBytes) || cfg.Flows[0].IsExplicit(KeyFetchMaxBytes) {
		t.Errorf("IsExplicit wrong for %v", cfg.Flows[0].Explicit)
	}
	if got := cfg.Flows[1].Explicit; got != nil {
		t.Errorf("second flow: Explicit = %v, want nil", got)
	}
}

func TestFormatSize(t *testing.T) {
	for in, want := range map[int64]string{
		512 << 20: "512 MiB", 3 << 29: "1.5 GiB", 1000: "1000 bytes", 4 << 10: "4 KiB", 1<<20 + 1: "1 MiB",
	} {
		if got := FormatSize(in); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[int64]string{
		512 << 20: "512MiB", 3 << 29: "1.5GiB", 1000: "1000", 1 << 50: "1024TiB", 128 << 20: "128MiB",
	} {
		if got := formatSize(in); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestBufferedFollowsBatchSize(t *testing.T) {
	cfg, err := Parse("kmirror.yaml", []byte(flow+"    producer: {batch_max_bytes: 67108864}\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if p := cfg.Flows[0].Producer; p.MaxBufferedBytes != 128<<20 || cfg.Flows[0].IsExplicit(KeyMaxBufferedBytes) {
		t.Errorf("producer = %+v, explicit %v; want max_buffered_bytes twice batch_max_bytes, not explicit", p, cfg.Flows[0].Explicit)
	}
}
