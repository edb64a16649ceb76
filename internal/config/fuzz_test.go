package config

import (
	"bytes"
	"strings"
	"testing"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// Values of the variables FuzzParse defines; a config may use them in any
// key through ${FUZZ_SECRET} and ${FUZZ_NUMBER}.
const (
	fuzzSecret = "Zq9xK7wPvL"
	fuzzNumber = "4815162342"
)

// FuzzParse feeds Parse arbitrary files (seeds in testdata/fuzz/FuzzParse:
// valid configs, merge keys, aliases, ${VAR} references, bad types and
// values). Parse must not panic, must return within a bounded time, and
// its errors must never show the value of a variable unless the file
// itself holds that text.
func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte(flow + "    replication_factor: ${FUZZ_SECRET}\n"))
	env := envOf(map[string]string{"FUZZ_SECRET": fuzzSecret, "FUZZ_NUMBER": fuzzNumber, "EMPTY": ""})
	f.Fuzz(func(t *testing.T, data []byte) {
		start := time.Now()
		cfg, err := Parse("kmirror.yaml", data, env)
		if took := time.Since(start); took > 3*time.Second {
			t.Fatalf("Parse took %s", took)
		}
		if err == nil {
			if cfg == nil {
				t.Fatal("nil config and nil error")
			}
			return
		}
		if cfg != nil {
			t.Fatalf("config returned with error %v", err)
		}
		msg := err.Error()
		for _, secret := range []string{fuzzSecret, fuzzNumber} {
			if strings.Contains(msg, secret) && !fileHolds(data, secret) {
				t.Fatalf("error shows the value of a variable (%q):\n%s", secret, msg)
			}
		}
		for _, line := range strings.Split(msg, "\n") {
			if !strings.HasPrefix(line, "kmirror.yaml") {
				t.Fatalf("error line does not name the file: %q", line)
			}
		}
	})
}

// fileHolds reports whether s is in data or in the text of one of its YAML
// nodes (a quoted scalar may spell it with escapes).
func fileHolds(data []byte, s string) bool {
	if bytes.Contains(data, []byte(s)) {
		return true
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		if err := dec.Decode(&doc); err != nil {
			return false
		}
		if nodeHolds(&doc, s) {
			return true
		}
	}
}

// nodeHolds walks n's tree without following aliases, so in linear time.
func nodeHolds(n *yaml.Node, s string) bool {
	if strings.Contains(n.Value, s) || strings.Contains(n.Tag, s) {
		return true
	}
	for _, c := range n.Content {
		if nodeHolds(c, s) {
			return true
		}
	}
	return false
}
