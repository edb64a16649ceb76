package config

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// failFast is how long a hostile config may take to be refused.
const failFast = 2 * time.Second

// parseHostile parses data, checks that it fails within failFast with one
// *Error on one line naming the file and the line, and returns the message.
func parseHostile(t *testing.T, data string, env map[string]string) string {
	t.Helper()
	start := time.Now()
	cfg, err := Parse("kmirror.yaml", []byte(data), envOf(env))
	took := time.Since(start)
	t.Logf("%d bytes refused in %s: %v", len(data), took.Round(time.Microsecond), err)
	if took > failFast {
		t.Errorf("took %s, want < %s", took, failFast)
	}
	if err == nil {
		t.Fatalf("no error; config %+v", cfg)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") {
		t.Errorf("error is not one line:\n%s", msg)
	}
	if !regexp.MustCompile(`^kmirror\.yaml:\d+: `).MatchString(msg) {
		t.Errorf("error names no file:line: %.300s", msg)
	}
	return msg
}

// mergeBomb is a "billion laughs" of merge keys: each cluster merges the
// previous one 9 times, so a naive expansion has 9^9 keys.
func mergeBomb() string {
	var b strings.Builder
	b.WriteString("clusters:\n  c0: &c0 {bootstrap_servers: [\"a:1\"]}\n")
	for i := 1; i <= 9; i++ {
		refs := strings.Repeat(fmt.Sprintf("*c%d,", i-1), 9)
		fmt.Fprintf(&b, "  c%d: &c%d {<<: [%s]}\n", i, i, strings.TrimSuffix(refs, ","))
	}
	b.WriteString("flows: [{source: c0, target: c1}]\n")
	return b.String()
}

func TestMergeBomb(t *testing.T) {
	// Aliases of a flow holding an alias of a long list: each flow decodes
	// the whole list again.
	var aliases strings.Builder
	aliases.WriteString(clusters + "flows:\n  - &f {source: primary, target: dr, topics: &t [" +
		strings.TrimSuffix(strings.Repeat("a,", 1000), ",") + "]}\n")
	for i := range 300 {
		fmt.Fprintf(&aliases, "  - {<<: *f, name: f%d}\n", i)
	}
	for _, tt := range []struct {
		name, data string
		line       int
	}{
		// Counting each merge, 9 + 9*9 + ... passes MaxNodes at c5, line 7.
		{"nested merge keys", mergeBomb(), 7},
		{"aliases of aliases", aliases.String(), 7},
	} {
		t.Run(tt.name, func(t *testing.T) {
			msg := parseHostile(t, tt.data, nil)
			if want := fmt.Sprintf("kmirror.yaml:%d: too many keys and list items (more than %d", tt.line, MaxNodes); !strings.HasPrefix(msg, want) {
				t.Errorf("error = %q, want prefix %q", msg, want)
			}
		})
	}
	if n := len(mergeBomb()); n > 700 {
		t.Errorf("merge bomb is %d bytes, want a small file", n)
	}
}

// TestMergeKeysMergedOnce checks that a mapping reached by several merges
// is merged once, with the nearest keys winning, and counts once per use.
func TestMergeKeysMergedOnce(t *testing.T) {
	data := clusters + `  other:
    bootstrap_servers: ["c:9092"]
    sasl: &base {mechanism: SCRAM-SHA-512, username: base, password: p}
  third:
    bootstrap_servers: ["d:9092"]
    sasl: &mid {<<: *base, username: mid}
  fourth:
    bootstrap_servers: ["e:9092"]
    sasl: {<<: [*mid, *base, *mid], password: q}
flows: [{source: primary, target: dr}]
`
	cfg, err := Parse("kmirror.yaml", []byte(data), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := *cfg.Clusters["fourth"].SASL, (SASL{Mechanism: "SCRAM-SHA-512", Username: "mid", Password: "q"}); got != want {
		t.Errorf("fourth SASL = %#v, want %#v", got, want)
	}
}

func TestRegexComplexity(t *testing.T) {
	nest := func(n int) string { return strings.Repeat("(", n) + "a" + strings.Repeat(")", n) }
	for _, tt := range []struct {
		name, key, re, want string
	}{
		// Compiles alone but not anchored as kmirror uses it (one more
		// group): this used to pass validation and panic.
		{"999 nested groups", "topics", nest(999), "expression nests too deeply"},
		{"1000 nested groups", "topics_exclude", nest(1000), "expression nests too deeply"},
		{"10000 nested groups", "groups", nest(10000), "regex of 20001 bytes is too long; expected at most 10000"},
		{"nested repetitions", "groups_exclude", "((a{1000}){1000}){1000}", "invalid repeat count: {1000}"},
		{"large repetition", "topics", `(ab|cd|ef|gh){999}`, "too complex: compiles to"},
		{"long chain", "topics", strings.Repeat("a?", 5000), "too complex: compiles to 1000"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data := flow + "    " + tt.key + ": ['" + tt.re + "']\n"
			msg := parseHostile(t, data, nil)
			if want := "kmirror.yaml:9: flows[0]." + tt.key + "[0]: "; !strings.HasPrefix(msg, want) {
				t.Errorf("error does not start with %q: %.200s", want, msg)
			}
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error does not contain %q: %.300s", tt.want, msg)
			}
			if len(msg) > 300 {
				t.Errorf("error of %d bytes, want the regex shortened", len(msg))
			}
		})
	}
	// At the limits, a regex is accepted and works.
	data := flow + "    topics: ['" + nest(998) + "', '" + strings.Repeat("a|", 2000) + "b']\n"
	cfg, err := Parse("kmirror.yaml", []byte(data), noEnv)
	if err != nil {
		t.Fatalf("%.300v", err)
	}
	if re := cfg.Flows[0].TopicsRegexps; !re[0].MatchString("a") || re[0].MatchString("aa") || !re[1].MatchString("b") {
		t.Errorf("regexes %v do not match as anchored", re)
	}
}

func TestFileTooLarge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kmirror.yaml")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	// 100 MB, sparse: Load must refuse it from its size, without reading.
	if err := f.Truncate(100 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	start := time.Now()
	_, err = Load(path)
	took := time.Since(start)
	want := fmt.Sprintf("%s: config file of 104857600 bytes is too large; expected at most 4194304 bytes (4 MiB)", path)
	if err == nil || err.Error() != want {
		t.Errorf("Load = %v, want %s", err, want)
	}
	if took > failFast {
		t.Errorf("took %s", took)
	}

	// Parse checks the size of what it is given.
	_, err = Parse("kmirror.yaml", make([]byte, MaxFileSize+1), noEnv)
	if want := "kmirror.yaml: config file of 4194305 bytes is too large; expected at most 4194304 bytes (4 MiB)"; err == nil || err.Error() != want {
		t.Errorf("Parse = %v, want %s", err, want)
	}

	// A file at the limit is read (and here is not YAML).
	if err := os.WriteFile(path, []byte(flow+"#"+strings.Repeat("x", MaxFileSize-len(flow)-1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err != nil {
		t.Errorf("file of exactly %d bytes: %v", MaxFileSize, err)
	}
}

// TestSecretNotShown puts an environment variable into every kind of key,
// with a value that is wrong there, and checks that the error names the
// ${VAR} and shows no part of the value.
func TestSecretNotShown(t *testing.T) {
	for _, tt := range []struct {
		name, data, secret, want string
	}{
		{"integer", flow + "    replication_factor: ${SECRET}\n", "Qz7Kx9Wvj", `flows[0].replication_factor: expected an integer, got "${SECRET}"`},
		{"integer out of range", flow + "    replication_factor: ${SECRET}\n", "98765432", `expected an integer from 1 to 32767, or 0 or -1 for the target cluster's default, got ${SECRET}`},
		{"integer with _", flow + "    producer: {batch_max_bytes: 2048, max_buffered_bytes: \"${SECRET}\"}\n", "1_0_2_4", `flows[0].producer.max_buffered_bytes: ${SECRET} is less than batch_max_bytes (2048)`},
		{"part of a value", flow + "    replication_factor: x${SECRET}y\n", "Qz7Kx9Wvj", `got "x${SECRET}y"`},
		{"boolean", flow + "    sync_group_offsets: ${SECRET}\n", "Qz7Kx9Wvj", `expected true or false, got "${SECRET}"`},
		{"duration", flow + "    sync_interval: ${SECRET}\n", "Qz7Kx9Wvj", `expected a duration such as 5s, got "${SECRET}"`},
		{"short value", flow + "    sync_interval: ${SECRET}\n", "5", `expected a duration such as 5s, got "${SECRET}" (a unit is required: ms, s, m or h)`},
		{"short number", flow + "    producer: {batch_max_bytes: 2048, max_buffered_bytes: \"${SECRET}\"}\n", "100", `flows[0].producer.max_buffered_bytes: ${SECRET} is less than batch_max_bytes (2048)`},
		{"duration out of range", flow + "    sync_interval: ${SECRET}\n", "99999h", `expected a duration between 100ms and 10m, got ${SECRET}`},
		{"enum", flow + "    topic_naming: ${SECRET}\n", "Qz7Kx9Wvj", `unknown value "${SECRET}"; expected prefix or identity`},
		{"value with quotes", flow + "    start_from: ${SECRET}\n", `hun"ter\2`, `unknown value "${SECRET}"`},
		{"regex", flow + "    topics: [\"${SECRET}\"]\n", `Qz7Kx9(Wvj`, `invalid regex "${SECRET}": missing closing )`},
		{"regex, bad escape", flow + "    groups: [\"${SECRET}\"]\n", `Qz7K\8Wvj`, `invalid regex "${SECRET}": invalid escape sequence`},
		{"address", strings.Replace(flow, `["127.0.0.1:9092"]`, `["${SECRET}"]`, 1), "Qz7Kx9:Wvj", `invalid address "${SECRET}": port "${SECRET}" is not a number`},
		{"address list", strings.Replace(flow, `["127.0.0.1:9092"]`, `"a:1,${SECRET}"`, 1), "Qz7Kx9Wvj", `invalid address "a:1,${SECRET}"`},
		{"listen", flow + "http: {listen: \"${SECRET}\"}\n", "Qz7Kx9Wvj", `http.listen: invalid address "${SECRET}"`},
		{"cluster", clusters + "flows: [{source: primary, target: \"${SECRET}\"}]\n", "Qz7Kx9Wvj", `unknown cluster "${SECRET}"`},
		{"flow name", flow + "    name: ${SECRET}\n", "Qz7Kx9Wvj!", `invalid flow name "${SECRET}"`},
		{"topic", flow + "    dead_letter_topic: ${SECRET}\n", "Qz7Kx9 Wvj", `invalid topic name "${SECRET}"`},
		{"file", strings.Replace(clusters, "9092\"]\n", "9092\"]\n    tls: {ca_file: \"/x/${SECRET}.pem\"}\n", 1) + "flows: [{source: primary, target: dr}]\n", "Qz7Kx9Wvj", `file "/x/${SECRET}.pem" does not exist`},
		{"log level", flow + "log: {level: \"${SECRET}\"}\n", "Qz7Kx9Wvj", `log.level: unknown value "${SECRET}"`},
		{"username", strings.Replace(clusters, "9092\"]\n", "9092\"]\n    sasl: {mechanism: \"${SECRET}\", username: u, password: p}\n", 1) + "flows: [{source: primary, target: dr}]\n", "Qz7Kx9Wvj", `sasl.mechanism: unknown value "${SECRET}"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			msg := parseHostile(t, tt.data, map[string]string{"SECRET": tt.secret})
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error does not contain %q:\n%s", tt.want, msg)
			}
			for i := 0; i+4 <= len(tt.secret); i++ {
				if part := tt.secret[i : i+4]; strings.Contains(msg, part) {
					t.Errorf("error shows %q, part of the value of SECRET: %s", part, msg)
				}
			}
		})
	}
}

// TestPrintedConfigHidesSecrets prints a loaded config every way fmt can
// and checks that the password from the environment is never shown.
func TestPrintedConfigHidesSecrets(t *testing.T) {
	const secret = "Qz7Kx9Wvj"
	data := strings.Replace(clusters, "9092\"]\n", "9092\"]\n    sasl: {mechanism: SCRAM-SHA-256, username: u, password: \"${SECRET}\"}\n", 1) +
		"flows: [{source: primary, target: dr}]\n"
	cfg, err := Parse("kmirror.yaml", []byte(data), envOf(map[string]string{"SECRET": secret}))
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Clusters["primary"]
	if c.SASL == nil || c.SASL.Password != secret {
		t.Fatalf("password not loaded: %v", c.SASL)
	}
	for _, out := range []string{
		fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg),
		fmt.Sprintf("%v %+v %#v", *cfg, *cfg, *cfg),
		fmt.Sprintf("%v %+v %#v", c, c, c),
		fmt.Sprintf("%v %+v %#v", *c, *c, *c),
		fmt.Sprintf("%v %+v %#v", cfg.Clusters, cfg.Clusters, cfg.Clusters),
	} {
		if strings.Contains(out, secret) {
			t.Errorf("secret shown: %s", out)
		}
	}
}

func TestMergeDepth(t *testing.T) {
	var b strings.Builder
	b.WriteString("clusters:\n  c0: &c0 {bootstrap_servers: [\"a:1\"]}\n")
	for i := 1; i <= 18; i++ {
		fmt.Fprintf(&b, "  c%d: &c%d {<<: *c%d}\n", i, i, i-1)
	}
	b.WriteString("flows: [{source: c0, target: c1}]\n")
	_, err := Parse("kmirror.yaml", []byte(b.String()), noEnv)
	// c17 is the first cluster with 17 merges in a chain; the error is at
	// the merge key where the chain is cut.
	if want := "kmirror.yaml:3: clusters.c17: merges (<<) nested more than 16 deep; expected fewer\n"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error = %v, want prefix %q", err, want)
	}
}

// TestMergeOfEmptyMappings checks that merging an empty mapping, which
// brings in no key, still counts: each flow below names it 2,000 times.
func TestMergeOfEmptyMappings(t *testing.T) {
	var b strings.Builder
	b.WriteString(clusters + "flows:\n  - &f\n    source: primary\n    target: dr\n    producer: &e {}\n    consumer: {<<: [" +
		strings.TrimSuffix(strings.Repeat("*e,", 2000), ",") + "]}\n")
	for range 200 {
		b.WriteString("  - *f\n")
	}
	msg := parseHostile(t, b.String(), nil)
	if want := "too many keys and list items"; !strings.Contains(msg, want) {
		t.Errorf("error = %q, want %q", msg, want)
	}
}
