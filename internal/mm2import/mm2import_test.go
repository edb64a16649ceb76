package mm2import

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmirror/kmirror/internal/config"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// lookupEnv stands for the variables a user sets: a password for every
// ${VAR}, and nothing for the ${VAR:-} PEM file references.
func lookupEnv(name string) (string, bool) {
	if strings.HasSuffix(name, "_FILE") {
		return "", false
	}
	return "placeholder", true
}

// notesText is what import-mm2 prints on stderr.
func notesText(r *Result) string {
	var b strings.Builder
	for _, e := range r.Env {
		fmt.Fprintf(&b, "env %s: %s\n", e.Name, e.What)
	}
	for _, n := range r.Notes {
		fmt.Fprintln(&b, n.String())
	}
	return b.String()
}

func TestFixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/*.properties")
	if err != nil || len(files) < 5 {
		t.Fatalf("fixtures: %v %v", files, err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".properties")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			r, err := Convert(data)
			if err != nil {
				t.Fatalf("Convert: %v", err)
			}
			cfg, err := config.Parse(name+".yaml", r.YAML, lookupEnv)
			if err != nil {
				t.Fatalf("generated config does not load: %v\n%s", err, r.YAML)
			}
			if len(cfg.Flows) == 0 {
				t.Fatal("no flows")
			}
			for _, secret := range []string{"PLACEHOLDER-password", "PLACEHOLDER-secret"} {
				if strings.Contains(string(r.YAML), secret) || strings.Contains(notesText(r), secret) {
					t.Errorf("output holds the secret %q", secret)
				}
			}
			golden(t, "testdata/"+name+".yaml", string(r.YAML))
			golden(t, "testdata/"+name+".notes", notesText(r))
		})
	}
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the golden file (run with -update after checking)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestParseProperties(t *testing.T) {
	in := "# comment\n! also a comment\n  key1 = value one  \nkey2:v2\nkey3 v3\nkey\\ 4 = a\\\n    b\\\\\nk5=\\u0041\\t\\=x\nk6\nk1b=first\nk1b=second\n" +
		"path=C:\\\\dir\\\\file\ncrlf = x\r\nlast=\\\n"
	props, err := ParseProperties([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	lines := map[string]int{}
	for _, p := range props {
		got[p.Key] = p.Value
		lines[p.Key] = p.Line
	}
	want := map[string]string{
		"key1": "value one  ", "key2": "v2", "key3": "v3", "key 4": `ab\`, "k5": "A\t=x", "k6": "",
		"k1b": "second", "path": `C:\dir\file`, "crlf": "x", "last": "",
	}
	if len(got) != len(want) {
		t.Errorf("got %d keys %q, want %d", len(got), got, len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%q = %q, want %q", k, got[k], v)
		}
	}
	if lines["key1"] != 3 || lines["k1b"] != 11 {
		t.Errorf("lines: %v", lines)
	}
	if _, err := ParseProperties([]byte("k=\\u12")); err == nil {
		t.Error("a short \\u escape was accepted")
	}
}

func TestConvertErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"A.bootstrap.servers=a:1\n", `no "clusters"`},
		{"clusters=A,B\nA.bootstrap.servers=a:1\nB.bootstrap.servers=b:1\n", "no replication flow is enabled"},
		{"clusters=A,B\nA.bootstrap.servers=a:1\nA->B.enabled=true\n", `cluster "B" has no B.bootstrap.servers`},
	} {
		if _, err := Convert([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Convert(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestConvertMappings(t *testing.T) {
	in := `clusters = a.b, C
a.b.bootstrap.servers = h:1
C.bootstrap.servers = h:2
C.security.protocol = SASL_PLAINTEXT
C.sasl.mechanism = PLAIN
C.sasl.jaas.config = org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="p@ss";
a.b->C.enabled = true
C->a.b.enabled = true # comment
sync.topic.configs.enabled = false
emit.checkpoints.enabled = false
refresh.topics.interval.seconds = 3600
`
	r, err := Convert([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	y := string(r.YAML)
	for _, want := range []string{"a-b:", "topic_prefix: a.b.", "password: ${C_SASL_PASSWORD}", "allow_plaintext_sasl: true",
		`topic_config_exclude: [.*]`, "sync_group_offsets: false", "topic_refresh_interval: 10m"} {
		if !strings.Contains(y, want) {
			t.Errorf("missing %q in\n%s", want, y)
		}
	}
	if strings.Contains(y, "p@ss") {
		t.Error("password printed")
	}
	if !strings.Contains(notesText(r), "is not true or false") {
		t.Errorf("the trailing comment of enabled is not reported:\n%s", notesText(r))
	}
}
