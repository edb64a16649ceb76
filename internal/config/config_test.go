package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// example is the example of the brief; it must parse.
const example = `clusters:
  primary:
    bootstrap_servers: ["127.0.0.1:9092"]
  dr:
    bootstrap_servers: ["127.0.0.1:9192"]
flows:
  - name: primary-to-dr        # default "<source>-to-<target>"
    source: primary
    target: dr
    topics: ["orders.*", "payments"]   # include regexes, default [".*"]
    topics_exclude: ["audit"]
    topic_naming: prefix               # prefix => "<source>.<topic>" (default) | identity => same name
    start_from: earliest               # earliest (default) | latest
http:
  listen: "127.0.0.1:9780"
`

// clusters is lines 1-5 of most test files.
const clusters = `clusters:
  primary:
    bootstrap_servers: ["127.0.0.1:9092"]
  dr:
    bootstrap_servers: ["127.0.0.1:9192"]
`

// flow is lines 6-8 of most test files; a test appends the flow's other
// keys from line 9.
const flow = clusters + `flows:
  - source: primary
    target: dr
`

func noEnv(string) (string, bool) { return "", false }

func envOf(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

func TestExampleDefaults(t *testing.T) {
	cfg, err := Parse("kmirror.yaml", []byte(example), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.File != "kmirror.yaml" {
		t.Errorf("File = %q", cfg.File)
	}
	wantClusters := map[string]*Cluster{
		"primary": {Alias: "primary", BootstrapServers: []string{"127.0.0.1:9092"}, ClientID: "kmirror", DialTimeout: 10 * time.Second, RequestTimeout: 30 * time.Second},
		"dr":      {Alias: "dr", BootstrapServers: []string{"127.0.0.1:9192"}, ClientID: "kmirror", DialTimeout: 10 * time.Second, RequestTimeout: 30 * time.Second},
	}
	if !reflect.DeepEqual(cfg.Clusters, wantClusters) {
		t.Errorf("Clusters = %+v, want %+v", cfg.Clusters, wantClusters)
	}
	if len(cfg.Flows) != 1 {
		t.Fatalf("%d flows, want 1", len(cfg.Flows))
	}
	f := cfg.Flows[0]
	got := *f
	got.TopicsRegexps, got.TopicsExcludeRegexps = nil, nil
	if s := regexpStrings(got.GroupsExcludeRegexps); !reflect.DeepEqual(s, []string{"^(?:console-consumer-.*)$", "^(?:connect-.*)$", "^(?:__.*)$"}) {
		t.Errorf("GroupsExcludeRegexps = %q", s)
	}
	got.GroupsRegexps, got.GroupsExcludeRegexps, got.TopicConfigExcludeRegexps = nil, nil, nil
	want := Flow{
		Name:                 "primary-to-dr",
		Source:               "primary",
		Target:               "dr",
		Topics:               []string{"orders.*", "payments"},
		TopicsExclude:        []string{"audit"},
		TopicNaming:          "prefix",
		TopicPrefix:          "primary.",
		StartFrom:            "earliest",
		ReplicationFactor:    0,
		TopicRefreshInterval: 5 * time.Second,
		ProgressInterval:     200 * time.Millisecond,
		Groups:               []string{".*"},
		GroupsExclude:        []string{"console-consumer-.*", "connect-.*", "__.*"},
		SyncGroupOffsets:     true,
		SyncInterval:         5 * time.Second,
		OffsetMapRetention:   7 * 24 * time.Hour,
		OffsetMapMaxRuns:     50000,
		RefusedRetryInterval: 5 * time.Minute,
		OwnershipTimeout:     10 * time.Second,
		TransactionInterval:  100 * time.Millisecond,
		TransactionMaxBytes:  16 << 20,
		ScaleOut:             true,
		TopicConfigExclude:   DefaultTopicConfigExclude,
		ACLs:                 "off",
		Provenance:           "auto",
		HeartbeatInterval:    time.Second,
		HeartbeatTopic:       "heartbeats",
		HeartbeatLocation:    "target",
		Line:                 7,
		Producer:             Producer{Compression: "lz4", Linger: 5 * time.Millisecond, BatchMaxBytes: 1048576, MaxBufferedBytes: 32 << 20, Acks: "all"},
		Consumer:             Consumer{FetchMaxBytes: 8 << 20, FetchMaxPartitionBytes: 2 << 20, IsolationLevel: "read_committed"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("flow =\n%+v\nwant\n%+v", got, want)
	}
	if s := regexpStrings(f.TopicsRegexps); !reflect.DeepEqual(s, []string{"^(?:orders.*)$", "^(?:payments)$"}) {
		t.Errorf("TopicsRegexps = %q", s)
	}
	if s := regexpStrings(f.TopicsExcludeRegexps); !reflect.DeepEqual(s, []string{"^(?:audit)$"}) {
		t.Errorf("TopicsExcludeRegexps = %q", s)
	}
	wantHTTP := HTTP{Listen: "127.0.0.1:9780", ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 8192, MaxConnections: 64}
	if cfg.HTTP != wantHTTP || cfg.Log != (Log{Level: "info", Format: "text"}) {
		t.Errorf("HTTP = %+v, Log = %+v", cfg.HTTP, cfg.Log)
	}
}

func regexpStrings(res []*regexp.Regexp) []string {
	s := make([]string, len(res))
	for i, re := range res {
		s[i] = re.String()
	}
	return s
}

func TestFlowDefaults(t *testing.T) {
	cfg, err := Parse("kmirror.yaml", []byte(flow), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	f := cfg.Flows[0]
	if f.Name != "primary-to-dr" || f.TopicPrefix != "primary." || !reflect.DeepEqual(f.Topics, []string{".*"}) || f.TopicsExclude != nil {
		t.Errorf("flow = %+v", f)
	}
	if s := regexpStrings(f.TopicsRegexps); !reflect.DeepEqual(s, []string{"^(?:.*)$"}) {
		t.Errorf("TopicsRegexps = %q", s)
	}
	for topic, want := range map[string]bool{"orders": true, "": true} {
		if got := f.TopicsRegexps[0].MatchString(topic); got != want {
			t.Errorf("match %q = %v", topic, got)
		}
	}
}

// TestValues checks keys set to something other than their default.
func TestValues(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"ca.pem", "cert.pem", "key.pem"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(dir, "kmirror.yaml")
	data := `clusters:
  primary:
    bootstrap_servers: ["a:9092", "[::1]:9093"]
    client_id: mirror-1
    dial_timeout: 3s
    request_timeout: 1m
    tls:
      ca_file: ca.pem
      cert_file: ` + filepath.Join(dir, "cert.pem") + `
      key_file: key.pem
      insecure_skip_verify: true
      server_name: kafka.internal
    sasl:
      mechanism: scram-sha-512
      username: mirror
      password: "s3cr#t: x"
  dr:
    bootstrap_servers: "b:9092, c:9092"
    tls: {enabled: false, ca_file: missing.pem}
flows:
  - source: primary
    target: dr
    topic_naming: identity
    start_from: LATEST
    replication_factor: -1
    topic_refresh_interval: 1m30s
    progress_interval: 1s
    dead_letter_topic: kmirror.dead-letters
    refused_retry_interval: 30s
    producer:
      compression: zstd
      linger: "0"
      batch_max_bytes: 2_097_152
      max_buffered_bytes: 1073741824
      acks: leader
    consumer:
      fetch_max_bytes: 1048576
      fetch_max_partition_bytes: 65536
      isolation_level: read_committed
  - name: dr.back
    source: dr
    target: primary
    topic_prefix: from-dr_
    replication_factor: 3
http:
  listen: "OFF"
log:
  level: debug
  format: json
`
	cfg, err := Parse(file, []byte(data), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Clusters["primary"]
	wantTLS := &TLS{Enabled: true, CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "cert.pem"),
		KeyFile: filepath.Join(dir, "key.pem"), InsecureSkipVerify: true, ServerName: "kafka.internal"}
	if !reflect.DeepEqual(p.TLS, wantTLS) {
		t.Errorf("TLS = %+v, want %+v", p.TLS, wantTLS)
	}
	if *p.SASL != (SASL{Mechanism: "SCRAM-SHA-512", Username: "mirror", Password: "s3cr#t: x"}) {
		t.Errorf("SASL = %#v", *p.SASL)
	}
	if !reflect.DeepEqual(p.BootstrapServers, []string{"a:9092", "[::1]:9093"}) || p.ClientID != "mirror-1" ||
		p.DialTimeout != 3*time.Second || p.RequestTimeout != time.Minute {
		t.Errorf("primary = %+v", p)
	}
	dr := cfg.Clusters["dr"]
	if !reflect.DeepEqual(dr.BootstrapServers, []string{"b:9092", "c:9092"}) || dr.TLS.Enabled || dr.SASL != nil {
		t.Errorf("dr = %+v, TLS %+v", dr, dr.TLS)
	}
	f := cfg.Flows[0]
	if f.TopicNaming != "identity" || f.TopicPrefix != "" || f.StartFrom != "latest" || f.ReplicationFactor != 0 ||
		f.TopicRefreshInterval != 90*time.Second || f.ProgressInterval != time.Second ||
		f.DeadLetterTopic != "kmirror.dead-letters" || f.RefusedRetryInterval != 30*time.Second {
		t.Errorf("flow 0 = %+v", f)
	}
	wantProducer := Producer{Compression: "zstd", Linger: 0, BatchMaxBytes: 2 << 20, MaxBufferedBytes: 1 << 30, Acks: "leader"}
	wantConsumer := Consumer{FetchMaxBytes: 1 << 20, FetchMaxPartitionBytes: 1 << 16, IsolationLevel: "read_committed"}
	if f.Producer != wantProducer || f.Consumer != wantConsumer {
		t.Errorf("producer = %+v, consumer = %+v", f.Producer, f.Consumer)
	}
	f = cfg.Flows[1]
	if f.Name != "dr.back" || f.TopicNaming != "prefix" || f.TopicPrefix != "from-dr_" || f.ReplicationFactor != 3 {
		t.Errorf("flow 1 = %+v", f)
	}
	if cfg.HTTP.Listen != "off" || cfg.Log != (Log{Level: "debug", Format: "json"}) {
		t.Errorf("HTTP = %+v, Log = %+v", cfg.HTTP, cfg.Log)
	}
}

func TestEnv(t *testing.T) {
	env := envOf(map[string]string{
		"BROKERS":  "k1:9092,k2:9092",
		"DR":       "dr:9092",
		"USER":     "mirror",
		"PASSWORD": "p#ss: {x}",
		"EMPTY":    "",
		"RF":       "3",
	})
	data := `clusters:
  primary:
    bootstrap_servers: ${BROKERS}
    client_id: ${CLIENT_ID:-kmirror-${x}
    allow_plaintext_sasl: true
    sasl:
      mechanism: PLAIN
      username: ${USER}-$$-$x-$
      password: ${PASSWORD}
  dr:
    bootstrap_servers: ["${DR}"]
    client_id: "${EMPTY:-fallback}"
flows:
  - source: primary
    target: dr
    replication_factor: ${RF}
    topic_prefix: ${EMPTY}from-primary.
`
	cfg, err := Parse("kmirror.yaml", []byte(data), env)
	if err != nil {
		t.Fatal(err)
	}
	p, dr := cfg.Clusters["primary"], cfg.Clusters["dr"]
	checks := []struct{ got, want any }{
		{p.BootstrapServers, []string{"k1:9092", "k2:9092"}},
		{p.ClientID, "kmirror-${x"},
		{p.SASL.Username, "mirror-$-$x-$"},
		{p.SASL.Password, "p#ss: {x}"},
		{dr.BootstrapServers, []string{"dr:9092"}},
		{dr.ClientID, "fallback"},
		{cfg.Flows[0].ReplicationFactor, 3},
		{cfg.Flows[0].TopicPrefix, "from-primary."},
	}
	for i, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("check %d: got %q, want %q", i, c.got, c.want)
		}
	}
}

func TestExpand(t *testing.T) {
	env := envOf(map[string]string{"A": "a", "EMPTY": ""})
	for _, tt := range []struct{ in, want, err string }{
		{in: "plain", want: "plain"},
		{in: "${A}", want: "a"},
		{in: "x${A}y${A}", want: "xaya"},
		{in: "${A:-d}", want: "a"},
		{in: "${B:-d}", want: "d"},
		{in: "${EMPTY:-d}", want: "d"},
		{in: "${EMPTY}", want: ""},
		{in: "${B:-}", want: ""},
		{in: "${B:-a:-b}", want: "a:-b"},
		{in: "$$", want: "$"},
		{in: "$${A}", want: "${A}"},
		{in: "$$$$", want: "$$"},
		{in: "$", want: "$"},
		{in: "a$b", want: "a$b"},
		{in: "${B}", err: "environment variable B is not set; expected it to be set, or a default such as ${B:-value}"},
		{in: "${A", err: `unterminated "${"; expected ${VAR} or ${VAR:-default} (write $$ for a literal $)`},
		{in: "${}", err: `invalid variable name "" in ${...}; expected letters, digits and _, not starting with a digit (write $$ for a literal $)`},
		{in: "${1A}", err: `invalid variable name "1A" in ${...}; expected letters, digits and _, not starting with a digit (write $$ for a literal $)`},
	} {
		got, err := expand(tt.in, env)
		switch {
		case tt.err != "" && (err == nil || err.Error() != tt.err):
			t.Errorf("expand(%q) error = %v, want %s", tt.in, err, tt.err)
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("expand(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"cert.pem", "key.pem"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name string
		data string
		env  map[string]string
		want []string // the lines of the error, in order
	}{
		{
			name: "syntax",
			data: "clusters:\n  primary:\n\tbootstrap_servers: []\n",
			want: []string{"kmirror.yaml:3: invalid YAML: found character that cannot start any token"},
		},
		{
			name: "syntax unclosed",
			data: clusters + "flows: [\n",
			want: []string{"kmirror.yaml:6: invalid YAML: did not find expected node content"},
		},
		{
			name: "empty",
			data: "",
			want: []string{"kmirror.yaml: empty config; expected keys clusters and flows"},
		},
		{
			name: "only comments",
			data: "# nothing yet\n\n",
			want: []string{"kmirror.yaml: empty config; expected keys clusters and flows"},
		},
		{
			name: "second document",
			data: flow + "---\nlog: {}\n",
			want: []string{`kmirror.yaml:10: a second YAML document; expected a single document (remove the "---" above it)`},
		},
		{
			name: "not a mapping",
			data: "- clusters\n",
			want: []string{"kmirror.yaml:1: expected a mapping with keys clusters and flows, got a list"},
		},
		{
			name: "missing clusters and flows",
			data: "log:\n  level: info\n",
			want: []string{
				"kmirror.yaml: clusters: missing; expected a mapping of cluster aliases to clusters",
				"kmirror.yaml: flows: missing; expected a list of flows",
			},
		},
		{
			name: "no clusters no flows",
			data: "clusters: {}\nflows: []\n",
			want: []string{
				"kmirror.yaml:1: clusters: empty; expected at least one cluster",
				"kmirror.yaml:2: flows: empty; expected at least one flow",
			},
		},
		{
			name: "unknown top-level key",
			data: flow + "metrics:\n  listen: x\n",
			want: []string{"kmirror.yaml:9: metrics: unknown key; expected one of: clusters, flows, http, log, memory_limit"},
		},
		{
			name: "unknown cluster key",
			data: "clusters:\n  dr:\n    bootstrap_servers: [\"127.0.0.1:9192\"]\n  primary:\n" +
				"    bootstrap_servers: [\"127.0.0.1:9092\"]\n    client_id: x\n    bootstrap: y\n" +
				"flows:\n  - {source: primary, target: dr}\n",
			want: []string{"kmirror.yaml:7: clusters.primary.bootstrap: unknown key; expected one of: allow_plaintext_sasl, bootstrap_servers, client_id, dial_timeout, request_timeout, sasl, tls"},
		},
		{
			name: "bad metadata keys",
			data: flow + "    acls: all\n    provenance: yes\n    topic_config_overrides:\n      Bad Key: 1\n      retention.ms: [1]\n    heartbeat_interval: 5\n    heartbeat_topic: __hb\n    topic_config_exclude: [\"(\"]\n",
			want: []string{
				`kmirror.yaml:9: flows[0].acls: unknown value "all"; expected off, safe or mirror`,
				`kmirror.yaml:10: flows[0].provenance: unknown value "yes"; expected auto, always or off`,
				`kmirror.yaml:12: flows[0].topic_config_overrides["Bad Key"]: invalid topic config key "Bad Key"; expected a key such as retention.ms`,
				`kmirror.yaml:13: flows[0].topic_config_overrides["retention.ms"]: expected a config value such as 2 or delete, got a list`,
				`kmirror.yaml:14: flows[0].heartbeat_interval: expected a duration such as 5s, got "5" (a unit is required: ms, s, m or h)`,
				`kmirror.yaml:15: flows[0].heartbeat_topic: invalid topic name "__hb"; expected 1 to 249 letters, digits, '.', '_' or '-', not starting with "__"`,
				`kmirror.yaml:16: flows[0].topic_config_exclude[0]: invalid regex "(": missing closing ): (`,
			},
		},
		{
			name: "verify_interval out of range",
			data: flow + "    verify_interval: 10s\n",
			want: []string{`kmirror.yaml:9: flows[0].verify_interval: expected a duration between 1m and 24h, got 10s`},
		},
		{
			name: "unknown heartbeat_location",
			data: flow + "    heartbeat_location: both\n",
			want: []string{`kmirror.yaml:9: flows[0].heartbeat_location: unknown value "both"; expected target or source`},
		},
		{
			name: "identity cycle without provenance",
			data: clusters + "flows:\n  - source: primary\n    target: dr\n    topic_naming: identity\n  - source: dr\n    target: primary\n    topic_naming: identity\n    provenance: off\n",
			want: []string{`kmirror.yaml:10: flows: flows "dr-to-primary", "primary-to-dr" copy topics with topic_naming: identity in a cycle (dr -> primary -> dr) and "dr-to-primary" has provenance off, so records would be copied round for ever; expected provenance: auto or always on every flow of the cycle, or topic_naming: prefix on one of them`},
		},
		{
			name: "unknown flow key",
			data: flow + "    topic: orders\n",
			want: []string{"kmirror.yaml:9: flows[0].topic: unknown key; expected one of: acls, consumer, dead_letter_topic, delete_topics, exactly_once, groups, groups_exclude, heartbeat_interval, heartbeat_location, heartbeat_topic, name, offset_map_max_runs, offset_map_retention, ownership_group, ownership_timeout, pass_through, producer, progress_interval, provenance, refused_retry_interval, replication_factor, scale_out, source, start_from, sync_group_offsets, sync_interval, target, topic_config_exclude, topic_config_overrides, topic_naming, topic_prefix, topic_refresh_interval, topics, topics_exclude, transaction_interval, transaction_max_bytes, verify_interval"},
		},
		{
			name: "unknown producer key",
			data: flow + "    producer:\n      batch_size: 1\n",
			want: []string{"kmirror.yaml:10: flows[0].producer.batch_size: unknown key; expected one of: acks, batch_max_bytes, compression, linger, max_buffered_bytes"},
		},
		{
			name: "duplicate key",
			data: flow + "    start_from: latest\n    start_from: earliest\n",
			want: []string{"kmirror.yaml:10: flows[0].start_from: duplicate key; already set on line 9; expected each key once"},
		},
		{
			name: "merge into itself",
			data: clusters + "flows:\n  - &x\n    source: primary\n    target: dr\n    <<: *x\n",
			want: []string{"kmirror.yaml:10: flows[0]: merge (<<) of a mapping into itself; expected a mapping defined elsewhere"},
		},
		{
			name: "merge of a scalar",
			data: flow + "    <<: 3\n",
			want: []string{`kmirror.yaml:9: flows[0]: expected a mapping or a list of mappings to merge (<<), got "3"`},
		},
		{
			name: "integer",
			data: flow + "    replication_factor: three\n",
			want: []string{`kmirror.yaml:9: flows[0].replication_factor: expected an integer, got "three"`},
		},
		{
			name: "replication factor range",
			data: flow + "    replication_factor: 40000\n",
			want: []string{`kmirror.yaml:9: flows[0].replication_factor: expected an integer from 1 to 32767, or 0 or -1 for the target cluster's default, got 40000`},
		},
		{
			name: "batch_max_bytes range",
			data: flow + "    producer:\n      batch_max_bytes: 100\n",
			want: []string{`kmirror.yaml:10: flows[0].producer.batch_max_bytes: expected an integer from 1024 (1 KiB) to 268435456 (256 MiB), got 100`},
		},
		{
			name: "max_buffered_bytes below batch",
			data: flow + "    producer:\n      batch_max_bytes: 2048\n      max_buffered_bytes: 1024\n",
			want: []string{`kmirror.yaml:11: flows[0].producer.max_buffered_bytes: 1024 is less than batch_max_bytes (2048); expected at least batch_max_bytes`},
		},
		{
			name: "fetch_max_bytes type",
			data: flow + "    consumer:\n      fetch_max_bytes: 1.5\n",
			want: []string{`kmirror.yaml:10: flows[0].consumer.fetch_max_bytes: expected an integer, got "1.5"`},
		},
		{
			name: "bool",
			data: clusters + "    tls:\n      enabled: yes\nflows: [{source: primary, target: dr}]\n",
			want: []string{`kmirror.yaml:7: clusters.dr.tls.enabled: expected true or false, got "yes"`},
		},
		{
			name: "string expected",
			data: clusters + "    client_id: [a]\nflows: [{source: primary, target: dr}]\n",
			want: []string{`kmirror.yaml:6: clusters.dr.client_id: expected a client ID, got a list`},
		},
		{
			name: "null value",
			data: flow + "http:\n",
			want: []string{`kmirror.yaml:9: http: expected a mapping with key listen, got an empty value`},
		},
		{
			name: "topics not a list",
			data: flow + "    topics: orders\n",
			want: []string{`kmirror.yaml:9: flows[0].topics: expected a list of regexes such as ["orders.*"], got "orders"`},
		},
		{
			name: "topics empty",
			data: flow + "    topics: []\n",
			want: []string{`kmirror.yaml:9: flows[0].topics: empty; expected at least one regex (leave topics out to replicate every topic)`},
		},
		{
			name: "duration without unit",
			data: flow + "    topic_refresh_interval: 5\n",
			want: []string{`kmirror.yaml:9: flows[0].topic_refresh_interval: expected a duration such as 5s, got "5" (a unit is required: ms, s, m or h)`},
		},
		{
			name: "dead letter topic and refused retry interval",
			data: flow + "    dead_letter_topic: \"bad topic\"\n    refused_retry_interval: 100ms\n",
			want: []string{
				`kmirror.yaml:9: flows[0].dead_letter_topic: invalid topic name "bad topic"; expected 1 to 249 letters, digits, '.', '_' or '-'`,
				`kmirror.yaml:10: flows[0].refused_retry_interval: expected a duration between 1s and 24h, got 100ms`,
			},
		},
		{
			name: "exactly once with acks leader, read_uncommitted and bad transaction settings",
			data: flow + "    exactly_once: true\n    transaction_interval: 5ms\n    transaction_max_bytes: 10\n    producer: {acks: leader}\n    consumer: {isolation_level: read_uncommitted}\n",
			want: []string{
				`kmirror.yaml:9: flows[0].exactly_once: exactly_once needs producer acks: all (transactions are idempotent writes acknowledged by all in-sync replicas); expected acks: all or exactly_once: false`,
				`kmirror.yaml:9: flows[0].exactly_once: exactly_once reads the source read_committed (aborted records are never copied); expected consumer isolation_level: read_committed or exactly_once: false`,
				`kmirror.yaml:10: flows[0].transaction_interval: expected a duration between 10ms and 1m, got 5ms`,
				`kmirror.yaml:11: flows[0].transaction_max_bytes: expected an integer from 1024 (1 KiB) to 1073741824 (1 GiB), got 10`,
			},
		},
		{
			name: "pass through with identity naming, exactly once and acks leader",
			data: flow + "    pass_through: true\n    topic_naming: identity\n    exactly_once: true\n    producer: {acks: leader}\n",
			want: []string{
				`kmirror.yaml:9: flows[0].pass_through: pass_through writes source record batches unchanged, and this flow adds a provenance header to every record (provenance: auto, topic_naming: identity); expected provenance: off or pass_through: false`,
				`kmirror.yaml:9: flows[0].pass_through: pass_through is not available with exactly_once yet; expected one of them false`,
				`kmirror.yaml:9: flows[0].pass_through: pass_through writes with an idempotent producer, which needs producer acks: all; expected acks: all or pass_through: false`,
				`kmirror.yaml:11: flows[0].exactly_once: exactly_once needs producer acks: all (transactions are idempotent writes acknowledged by all in-sync replicas); expected acks: all or exactly_once: false`,
			},
		},
		{
			name: "pass through as a word",
			data: flow + "    pass_through: yes please\n",
			want: []string{`kmirror.yaml:9: flows[0].pass_through: expected true or false, got "yes please"`},
		},
		{
			name: "ownership group",
			data: clusters + `flows:
  - {name: a, source: primary, target: dr, ownership_group: "bad group"}
  - {name: b, source: primary, target: dr, ownership_group: kmirror-owners}
  - {name: c, source: dr, target: primary, ownership_group: kmirror-owners}
  - {name: d, source: primary, target: dr, ownership_group: kmirror-owners}
  - {name: e, source: primary, target: dr, ownership_group: ""}
`,
			want: []string{
				`kmirror.yaml:7: flows[0].ownership_group: invalid group name "bad group"; expected 1 to 249 letters, digits, '.', '_', '-' or ':'`,
				`kmirror.yaml:10: flows[3].ownership_group: ownership group "kmirror-owners" on cluster "dr" is also the one of flows[1].ownership_group on line 8; expected one group per flow`,
				`kmirror.yaml:11: flows[4].ownership_group: empty; expected a consumer group name`,
			},
		},
		{
			name: "duration garbage",
			data: clusters + "    dial_timeout: soon\nflows: [{source: primary, target: dr}]\n",
			want: []string{`kmirror.yaml:6: clusters.dr.dial_timeout: expected a duration such as 5s, got "soon"`},
		},
		{
			name: "duration range",
			data: flow + "    topic_refresh_interval: 50ms\n    progress_interval: 2m\n    producer: {linger: -1s}\n    ownership_timeout: 2s\n",
			want: []string{
				`kmirror.yaml:9: flows[0].topic_refresh_interval: expected a duration between 100ms and 10m, got 50ms`,
				`kmirror.yaml:10: flows[0].progress_interval: expected a duration between 10ms and 1m, got 2m`,
				`kmirror.yaml:11: flows[0].producer.linger: expected a duration between 0s and 10s, got -1s`,
				`kmirror.yaml:12: flows[0].ownership_timeout: expected a duration between 6s and 30m, got 2s`,
			},
		},
		{
			name: "timeout not positive",
			data: clusters + "    request_timeout: 0s\nflows: [{source: primary, target: dr}]\n",
			want: []string{`kmirror.yaml:6: clusters.dr.request_timeout: expected a duration of at least 1ms, got 0s`},
		},
		{
			name: "unknown source cluster",
			data: clusters + "flows:\n  - source: primry\n    target: dr\n",
			want: []string{`kmirror.yaml:7: flows[0].source: unknown cluster "primry"; defined clusters: dr, primary`},
		},
		{
			name: "unknown target cluster",
			data: clusters + "flows:\n  - source: primary\n    target: DR\n",
			want: []string{`kmirror.yaml:8: flows[0].target: unknown cluster "DR"; defined clusters: dr, primary`},
		},
		{
			name: "missing source and target",
			data: clusters + "flows:\n  - name: x\n",
			want: []string{
				`kmirror.yaml:7: flows[0].source: missing; expected the alias of a cluster defined under clusters`,
				`kmirror.yaml:7: flows[0].target: missing; expected the alias of a cluster defined under clusters`,
			},
		},
		{
			name: "source is target",
			data: clusters + "flows:\n  - source: dr\n    target: dr\n",
			want: []string{`kmirror.yaml:8: flows[0].target: same cluster as source ("dr"); expected a different cluster`},
		},
		{
			name: "invalid regex",
			data: flow + "    topics:\n      - payments\n      - orders.(*\n",
			want: []string{`kmirror.yaml:11: flows[0].topics[1]: invalid regex "orders.(*": missing argument to repetition operator: *`},
		},
		{
			name: "invalid exclude regex",
			data: flow + "    topics_exclude: [\"a[\", \"\"]\n",
			want: []string{
				`kmirror.yaml:9: flows[0].topics_exclude[0]: invalid regex "a[": missing closing ]: [`,
				`kmirror.yaml:9: flows[0].topics_exclude[1]: empty; expected a regex (".*" matches every topic)`,
			},
		},
		{
			name: "topic_naming",
			data: flow + "    topic_naming: suffix\n",
			want: []string{`kmirror.yaml:9: flows[0].topic_naming: unknown value "suffix"; expected prefix or identity`},
		},
		{
			name: "start_from",
			data: flow + "    start_from: beginning\n",
			want: []string{`kmirror.yaml:9: flows[0].start_from: unknown value "beginning"; expected earliest or latest`},
		},
		{
			name: "compression",
			data: flow + "    producer:\n      compression: brotli\n",
			want: []string{`kmirror.yaml:10: flows[0].producer.compression: unknown value "brotli"; expected none, gzip, snappy, lz4 or zstd`},
		},
		{
			name: "acks",
			data: flow + "    producer:\n      acks: 1\n",
			want: []string{`kmirror.yaml:10: flows[0].producer.acks: unknown value "1"; expected all or leader`},
		},
		{
			name: "isolation_level",
			data: flow + "    consumer:\n      isolation_level: committed\n",
			want: []string{`kmirror.yaml:10: flows[0].consumer.isolation_level: unknown value "committed"; expected read_uncommitted or read_committed`},
		},
		{
			name: "log level and format",
			data: flow + "log:\n  level: verbose\n  format: yaml\n",
			want: []string{
				`kmirror.yaml:10: log.level: unknown value "verbose"; expected debug, info, warn or error`,
				`kmirror.yaml:11: log.format: unknown value "yaml"; expected text or json`,
			},
		},
		{
			name: "sasl mechanism",
			data: clusters + "    sasl:\n      mechanism: GSSAPI\n      username: u\n      password: p\nflows: [{source: primary, target: dr}]\n",
			want: []string{`kmirror.yaml:7: clusters.dr.sasl.mechanism: unknown value "GSSAPI"; expected PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM`},
		},
		{
			name: "oauth both sources",
			data: clusters + "    sasl:\n      mechanism: OAUTHBEARER\n      token_endpoint: https://idp/token\n      client_id: k\n      client_secret: hunter2\n      token_file: " + filepath.Join(dir, "cert.pem") + "\nflows: [{source: primary, target: dr}]\n",
			want: []string{`kmirror.yaml:11: clusters.dr.sasl.token_file: set with token_endpoint (line 8); expected one of token_endpoint or token_file`},
		},
		{
			name: "oauth no source",
			data: clusters + "    sasl: {mechanism: oauthbearer, scope: kafka}\nflows: [{source: primary, target: dr}]\n",
			want: []string{`kmirror.yaml:6: clusters.dr.sasl.token_endpoint: missing; expected token_endpoint (with client_id and client_secret) or token_file`},
		},
		{
			name: "oauth missing client secret",
			data: clusters + "    sasl:\n      mechanism: OAUTHBEARER\n      token_endpoint: https://idp/token\n      client_id: k\n      username: u\nflows: [{source: primary, target: dr}]\n",
			want: []string{
				`kmirror.yaml:6: clusters.dr.sasl.client_secret: missing; expected the OAuth client secret (such as ${OIDC_SECRET})`,
				`kmirror.yaml:10: clusters.dr.sasl.username: not used with mechanism OAUTHBEARER; expected only: mechanism, token_endpoint, client_id, client_secret, scope, token_file, extensions`,
			},
		},
		{
			name: "oauth endpoint not https",
			data: clusters + "    sasl: {mechanism: OAUTHBEARER, token_endpoint: \"http://idp.example/token\", client_id: k, client_secret: hunter2}\n" +
				"  other:\n    bootstrap_servers: [\"c:1\"]\n    sasl: {mechanism: OAUTHBEARER, token_endpoint: \"idp/token\", client_id: k, client_secret: hunter2}\nflows: [{source: primary, target: dr}]\n",
			want: []string{
				`kmirror.yaml:6: clusters.dr.sasl.token_endpoint: "http://idp.example/token" is not https; expected an https:// URL (the client secret would cross the network in clear)`,
				`kmirror.yaml:9: clusters.other.sasl.token_endpoint: invalid URL "idp/token"; expected an https:// URL`,
			},
		},
		{
			name: "oauth token file with client keys",
			data: clusters + "    sasl: {mechanism: OAUTHBEARER, token_file: " + filepath.Join(dir, "nope") + ", client_secret: hunter2, extensions: {logicalCluster: lkc-1, auth: x}}\nflows: [{source: primary, target: dr}]\n",
			want: []string{
				`kmirror.yaml:6: clusters.dr.sasl.client_secret: only used with token_endpoint; expected no client_secret with token_file`,
				`kmirror.yaml:6: clusters.dr.sasl.token_file: file "` + filepath.Join(dir, "nope") + `" does not exist; expected a readable file holding the token`,
				`kmirror.yaml:6: clusters.dr.sasl.extensions.auth: invalid SASL extension name "auth"; expected letters only, not "auth"`,
			},
		},
		{
			name: "client secret never shown",
			env:  map[string]string{"OIDC_SECRET": "hunter2"},
			data: clusters + "    sasl: {mechanism: OAUTHBEARER, token_endpoint: \"https://idp/t\", client_id: k, client_secret: [hunter2]}\n" +
				"  other:\n    bootstrap_servers: [\"c:1\"]\n    sasl: {mechanism: OAUTHBEARER, token_endpoint: \"https://idp/t\", client_id: k, client_secret: \"hunter2${1x}\"}\nflows: [{source: primary, target: dr}]\n",
			want: []string{
				`kmirror.yaml:6: clusters.dr.sasl.client_secret: expected a client secret, got a list`,
				`kmirror.yaml:9: clusters.other.sasl.client_secret: invalid variable name in ${...}; expected letters, digits and _, not starting with a digit (write $$ for a literal $)`,
			},
		},
		{
			name: "aws region",
			data: clusters + "    sasl: {mechanism: AWS_MSK_IAM, region: US-EAST, username: u}\nflows: [{source: primary, target: dr}]\n",
			want: []string{
				`kmirror.yaml:6: clusters.dr.sasl.username: not used with mechanism AWS_MSK_IAM; expected only: mechanism, region`,
				`kmirror.yaml:6: clusters.dr.sasl.region: invalid region "US-EAST"; expected an AWS region such as us-east-1`,
			},
		},
		{
			name: "sasl plain without tls",
			data: clusters + "    sasl:\n      mechanism: PLAIN\n      username: u\n      password: ${PW}\n" +
				"  other:\n    bootstrap_servers: [\"c:1\"]\n    tls: {enabled: false}\n    sasl: {mechanism: PLAIN, username: u, password: p}\n" +
				"flows: [{source: primary, target: dr}]\n",
			env: map[string]string{"PW": "hunter2"},
			want: []string{
				`kmirror.yaml:6: clusters.dr.sasl: mechanism PLAIN without TLS sends the password in clear; add a tls block (tls: {} uses the system's roots) or set allow_plaintext_sasl: true on the cluster`,
				`kmirror.yaml:13: clusters.other.sasl: mechanism PLAIN without TLS sends the password in clear; add a tls block (tls: {} uses the system's roots) or set allow_plaintext_sasl: true on the cluster`,
			},
		},
		{
			name: "sasl missing keys",
			data: clusters + "    sasl: {mechanism: PLAIN}\nflows: [{source: primary, target: dr}]\n",
			want: []string{
				`kmirror.yaml:6: clusters.dr.sasl.username: missing; expected a user name`,
				`kmirror.yaml:6: clusters.dr.sasl.password: missing; expected a password (such as ${KAFKA_PASSWORD})`,
			},
		},
		{
			name: "duplicate flow names",
			data: flow + "  - source: primary\n    target: dr\n  - name: primary-to-dr\n    source: dr\n    target: primary\n",
			want: []string{
				`kmirror.yaml:9: flows[1].name: duplicate flow name "primary-to-dr", also used by flows[0] on line 7; expected unique names (set name to tell the flows apart)`,
				`kmirror.yaml:11: flows[2].name: duplicate flow name "primary-to-dr", also used by flows[0] on line 7; expected unique names (set name to tell the flows apart)`,
			},
		},
		{
			name: "invalid flow name",
			data: flow + "    name: primary to dr\n",
			want: []string{`kmirror.yaml:9: flows[0].name: invalid flow name "primary to dr"; expected 1 to 100 letters, digits, '.', '_' or '-'`},
		},
		{
			name: "invalid alias",
			data: "clusters:\n  primary.eu:\n    bootstrap_servers: [\"a:1\"]\n  dr:\n    bootstrap_servers: [\"b:1\"]\nflows: [{source: primary.eu, target: dr, name: x}]\n",
			want: []string{`kmirror.yaml:2: clusters["primary.eu"]: invalid cluster alias "primary.eu"; expected 1 to 64 letters, digits, _ or -`},
		},
		{
			name: "topic_prefix with identity",
			data: flow + "    topic_naming: identity\n    topic_prefix: p.\n",
			want: []string{`kmirror.yaml:10: flows[0].topic_prefix: only allowed with topic_naming: prefix; expected no topic_prefix with topic_naming: identity`},
		},
		{
			name: "invalid topic_prefix",
			data: flow + "    topic_prefix: \"a/b.\"\n",
			want: []string{`kmirror.yaml:9: flows[0].topic_prefix: invalid topic prefix "a/b."; expected at most 248 letters, digits, '.', '_' or '-'`},
		},
		{
			name: "bootstrap addresses",
			data: "clusters:\n  primary:\n    bootstrap_servers: [localhost, \"h:abc\", \":9092\", \"h:0\", \"h:9092\"]\n" +
				"  dr:\n    bootstrap_servers: \"a:1,b\"\n  other:\n    bootstrap_servers: []\nflows: [{source: primary, target: dr}]\n",
			want: []string{
				`kmirror.yaml:3: clusters.primary.bootstrap_servers[0]: invalid address "localhost"; expected "host:port" with a numeric port`,
				`kmirror.yaml:3: clusters.primary.bootstrap_servers[1]: invalid address "h:abc": port "abc" is not a number from 1 to 65535; expected "host:port" with a numeric port`,
				`kmirror.yaml:3: clusters.primary.bootstrap_servers[2]: invalid address ":9092": no host; expected "host:port" with a numeric port`,
				`kmirror.yaml:3: clusters.primary.bootstrap_servers[3]: invalid address "h:0": port "0" is not a number from 1 to 65535; expected "host:port" with a numeric port`,
				`kmirror.yaml:5: clusters.dr.bootstrap_servers: invalid address "b"; expected "host:port" with a numeric port`,
				`kmirror.yaml:7: clusters.other.bootstrap_servers: empty; expected at least one "host:port" address`,
			},
		},
		{
			name: "missing bootstrap_servers",
			data: "clusters:\n  primary:\n    client_id: x\n  dr:\n    bootstrap_servers: [\"b:1\"]\nflows: [{source: primary, target: dr}]\n",
			want: []string{`kmirror.yaml:2: clusters.primary.bootstrap_servers: missing; expected a list of "host:port" addresses`},
		},
		{
			name: "tls cert without key",
			data: clusters + "    tls:\n      cert_file: " + filepath.Join(dir, "cert.pem") + "\nflows: [{source: primary, target: dr}]\n",
			want: []string{`kmirror.yaml:7: clusters.dr.tls.cert_file: set without key_file; expected both cert_file and key_file, or neither`},
		},
		{
			name: "tls key without cert",
			data: clusters + "    tls:\n      key_file: " + filepath.Join(dir, "key.pem") + "\nflows: [{source: primary, target: dr}]\n",
			want: []string{`kmirror.yaml:7: clusters.dr.tls.key_file: set without cert_file; expected both cert_file and key_file, or neither`},
		},
		{
			name: "tls file missing",
			data: clusters + "    tls:\n      ca_file: " + filepath.Join(dir, "nope.pem") + "\n      cert_file: " + dir + "\n      key_file: " + filepath.Join(dir, "key.pem") + "\nflows: [{source: primary, target: dr}]\n",
			want: []string{
				`kmirror.yaml:7: clusters.dr.tls.ca_file: file "` + filepath.Join(dir, "nope.pem") + `" does not exist; expected a readable PEM file`,
				`kmirror.yaml:8: clusters.dr.tls.cert_file: "` + dir + `" is a directory; expected a readable PEM file`,
			},
		},
		{
			name: "tls relative file missing",
			data: clusters + "    tls:\n      ca_file: certs/ca.pem\nflows: [{source: primary, target: dr}]\n",
			want: []string{`kmirror.yaml:7: clusters.dr.tls.ca_file: file "certs/ca.pem" does not exist; expected a readable PEM file`},
		},
		{
			name: "http listen",
			data: flow + "http:\n  listen: \"\"\n",
			want: []string{`kmirror.yaml:10: http.listen: empty; expected "host:port" or "off"`},
		},
		{
			name: "http listen address",
			data: flow + "http:\n  listen: 9780\n",
			want: []string{`kmirror.yaml:10: http.listen: invalid address "9780"; expected "host:port" with a numeric port`},
		},
		{
			name: "undefined variable",
			data: clusters + "    client_id: ${CLIENT_ID}\nflows: [{source: primary, target: dr}]\n",
			want: []string{`kmirror.yaml:6: clusters.dr.client_id: environment variable CLIENT_ID is not set; expected it to be set, or a default such as ${CLIENT_ID:-value}`},
		},
		{
			name: "undefined variable in list",
			data: clusters + "flows:\n  - source: primary\n    target: dr\n    topics: [\"${A}\", \"${TOPIC}\"]\n",
			env:  map[string]string{"A": "a"},
			want: []string{`kmirror.yaml:9: flows[0].topics[1]: environment variable TOPIC is not set; expected it to be set, or a default such as ${TOPIC:-value}`},
		},
		{
			name: "variable expands to a bad value",
			data: flow + "    replication_factor: ${RF}\n",
			env:  map[string]string{"RF": "three"},
			want: []string{`kmirror.yaml:9: flows[0].replication_factor: expected an integer, got "${RF}"`},
		},
		{
			name: "password never shown",
			data: clusters + "    sasl:\n      mechanism: PLAIN\n      username: u\n      password: hunter2${1bad}\n  other:\n    bootstrap_servers: [\"c:1\"]\n" +
				"    sasl:\n      mechanism: PLAIN\n      username: u\n      password: [hunter2]\n      pasword: hunter2\nflows: [{source: primary, target: dr}]\n",
			want: []string{
				`kmirror.yaml:9: clusters.dr.sasl.password: invalid variable name in ${...}; expected letters, digits and _, not starting with a digit (write $$ for a literal $)`,
				`kmirror.yaml:15: clusters.other.sasl.password: expected a password, got a list`,
				`kmirror.yaml:16: clusters.other.sasl.pasword: unknown key; expected one of: client_id, client_secret, extensions, mechanism, password, region, scope, token_endpoint, token_file, username`,
			},
		},
		{
			name: "many problems in file order",
			data: "log:\n  level: loud\nflows:\n  - source: a\n    target: b\n    topics: [\"(\"]\nclusters:\n  a:\n    bootstrap_servers: [x]\n",
			want: []string{
				`kmirror.yaml:2: log.level: unknown value "loud"; expected debug, info, warn or error`,
				`kmirror.yaml:5: flows[0].target: unknown cluster "b"; defined clusters: a`,
				`kmirror.yaml:6: flows[0].topics[0]: invalid regex "(": missing closing ): (`,
				`kmirror.yaml:9: clusters.a.bootstrap_servers[0]: invalid address "x"; expected "host:port" with a numeric port`,
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("kmirror.yaml", []byte(tt.data), envOf(tt.env))
			if err == nil {
				t.Fatalf("no error; config %+v", cfg)
			}
			if cfg != nil {
				t.Errorf("config %+v returned with an error", cfg)
			}
			if got, want := err.Error(), strings.Join(tt.want, "\n"); got != want {
				t.Errorf("error:\n%s\nwant:\n%s", got, want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error shows a password: %v", err)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Errorf("error %T is not an *Error", err)
			}
		})
	}
}

func TestMergeKeys(t *testing.T) {
	// Unknown keys are errors, so anchors live where they are used first.
	data := clusters + `  other:
    bootstrap_servers: ["c:9092"]
    sasl: &sasl
      mechanism: SCRAM-SHA-256
      username: mirror
      password: secret
  third:
    bootstrap_servers: ["d:9092"]
    sasl:
      <<: *sasl
      username: third
flows:
  - &flow
    source: primary
    target: dr
    start_from: latest
  - <<: *flow
    name: other
`
	cfg, err := Parse("kmirror.yaml", []byte(data), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if got := *cfg.Clusters["third"].SASL; got != (SASL{Mechanism: "SCRAM-SHA-256", Username: "third", Password: "secret"}) {
		t.Errorf("third SASL = %#v", got)
	}
	if f := cfg.Flows[1]; f.Name != "other" || f.Source != "primary" || f.StartFrom != "latest" {
		t.Errorf("flow 1 = %+v", f)
	}
}

func TestErrorString(t *testing.T) {
	for _, tt := range []struct {
		e    Error
		want string
	}{
		{Error{File: "k.yaml", Line: 3, Key: "a.b", Msg: "bad"}, "k.yaml:3: a.b: bad"},
		{Error{File: "k.yaml", Key: "a.b", Msg: "bad"}, "k.yaml: a.b: bad"},
		{Error{File: "k.yaml", Line: 3, Msg: "bad"}, "k.yaml:3: bad"},
		{Error{Line: 3, Key: "a", Msg: "bad"}, "line 3: a: bad"},
		{Error{Msg: "bad"}, "bad"},
	} {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("%#v.Error() = %q, want %q", tt.e, got, tt.want)
		}
	}
}

func TestSASLString(t *testing.T) {
	s := &SASL{Mechanism: "PLAIN", Username: "u", Password: "hunter2"}
	c := Cluster{Alias: "a", SASL: s}
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v", *s, s, *s), fmt.Sprintf("%+v", c)} {
		if strings.Contains(out, "hunter2") {
			t.Errorf("password shown: %s", out)
		}
		if !strings.Contains(out, "<redacted>") {
			t.Errorf("no <redacted> in %s", out)
		}
	}
}

func TestOAuthString(t *testing.T) {
	s := SASL{Mechanism: "OAUTHBEARER", OAuth: &OAuth{TokenEndpoint: "https://idp/t", ClientID: "k", ClientSecret: "hunter2"}}
	c := Cluster{Alias: "a", SASL: &s}
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %#v", s, &s, s, *s.OAuth), fmt.Sprintf("%+v", c)} {
		if strings.Contains(out, "hunter2") {
			t.Errorf("client secret shown: %s", out)
		}
		if !strings.Contains(out, "ClientSecret:<redacted>") {
			t.Errorf("no ClientSecret:<redacted> in %s", out)
		}
	}
}

func TestParseOAuthAndMSK(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("t"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := `clusters:
  msk:
    bootstrap_servers: ["b-1.example.kafka.us-east-1.amazonaws.com:9098"]
    tls: {}
    sasl: {mechanism: AWS_MSK_IAM, region: us-east-1}
  cloud:
    bootstrap_servers: ["pkc-1:9092"]
    tls: {}
    sasl: {mechanism: OAUTHBEARER, token_endpoint: "https://idp/oauth2/token", client_id: kmirror, client_secret: "${OIDC_SECRET}", scope: kafka,
           extensions: {logicalCluster: lkc-1}}
  file:
    bootstrap_servers: ["k:9092"]
    sasl: {mechanism: oauthbearer, token_file: token}
  nothing:
    bootstrap_servers: ["k:9092"]
    sasl: {mechanism: AWS_MSK_IAM}
flows: [{source: msk, target: cloud}]
`
	cfg, err := Parse(filepath.Join(dir, "kmirror.yaml"), []byte(data), envOf(map[string]string{"OIDC_SECRET": "s3cret"}))
	if err != nil {
		t.Fatal(err)
	}
	for alias, want := range map[string]SASL{
		"msk": {Mechanism: "AWS_MSK_IAM", Region: "us-east-1"},
		"cloud": {Mechanism: "OAUTHBEARER", OAuth: &OAuth{TokenEndpoint: "https://idp/oauth2/token", ClientID: "kmirror",
			ClientSecret: "s3cret", Scope: "kafka", Extensions: map[string]string{"logicalCluster": "lkc-1"}}},
		"file":    {Mechanism: "OAUTHBEARER", OAuth: &OAuth{TokenFile: token}},
		"nothing": {Mechanism: "AWS_MSK_IAM"},
	} {
		if got := *cfg.Clusters[alias].SASL; !reflect.DeepEqual(got, want) {
			t.Errorf("%s: SASL = %#v, want %#v (client secret %v)", alias, got, want, got.OAuth != nil && want.OAuth != nil && got.OAuth.ClientSecret == want.OAuth.ClientSecret)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kmirror.yaml")
	if err := os.WriteFile(path, []byte(example), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KMIRROR_TEST_LISTEN", "127.0.0.1:0")
	cfg, err := Load(path)
	if err != nil || cfg.File != path {
		t.Fatalf("Load = %+v, %v", cfg, err)
	}

	missing := filepath.Join(dir, "missing.yaml")
	_, err = Load(missing)
	want := fmt.Sprintf("config file %q: open %s: no such file or directory", missing, missing)
	if err == nil || err.Error() != want {
		t.Errorf("Load(missing) = %v, want %s", err, want)
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) error does not wrap os.ErrNotExist: %v", err)
	}
}

func TestLoadUsesEnvironment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kmirror.yaml")
	if err := os.WriteFile(path, []byte(flow+"http:\n  listen: ${KMIRROR_TEST_LISTEN}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KMIRROR_TEST_LISTEN", "0.0.0.0:9999")
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.Listen != "0.0.0.0:9999" {
		t.Errorf("listen = %q", cfg.HTTP.Listen)
	}
}

// TestExamples loads examples/kmirror.yaml and every complete config in
// docs/configuration.md, so that the documentation stays true.
func TestExamples(t *testing.T) {
	env := envOf(map[string]string{"KAFKA_PASSWORD": "x", "DR_BOOTSTRAP": "dr:9092"})
	data, err := os.ReadFile("../../examples/kmirror.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse("examples/kmirror.yaml", data, env); err != nil {
		t.Errorf("examples/kmirror.yaml: %v", err)
	}
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	n := 0
	for _, b := range blocks {
		if !strings.Contains(b[1], "clusters:") || !strings.Contains(b[1], "flows:") {
			continue
		}
		n++
		if _, err := Parse("docs/configuration.md", []byte(b[1]), env); err != nil {
			t.Errorf("docs example %d: %v\n%s", n, err, b[1])
		}
	}
	if n == 0 {
		t.Error("no complete example in docs/configuration.md")
	}
}
