package main

import (
	"strings"
	"testing"

	"github.com/kmirror/kmirror/internal/config"
)

func TestMemoryWarnings(t *testing.T) {
	const data = `clusters:
  a: {bootstrap_servers: ["a:9092"]}
  b: {bootstrap_servers: ["b:9092"]}
flows:
  - source: a
    target: b
    producer:
      max_buffered_bytes: 1073741824
memory_limit: 512MiB
`
	cfg, err := config.Parse("kmirror.yaml", []byte(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	ws := memoryWarnings(cfg)
	if len(ws) != 1 || !strings.HasPrefix(ws[0], "kmirror.yaml:8: flows[0].producer.max_buffered_bytes: 1073741824 (1 GiB) is more than the memory limit leaves this flow (32 MiB)") {
		t.Errorf("warnings = %q", ws)
	}
	cfg.Flows[0].Explicit = nil
	cfg.Flows[0].Producer.MaxBufferedBytes = config.DefaultMaxBufferedBytes
	if ws := memoryWarnings(cfg); len(ws) != 0 {
		t.Errorf("warnings without the key = %q", ws)
	}
}
