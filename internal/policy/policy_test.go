package policy

import (
	"regexp"
	"testing"

	"github.com/kmirror/kmirror/internal/config"
)

const clusters = `clusters:
  primary:
    bootstrap_servers: ["127.0.0.1:9092"]
  dr:
    bootstrap_servers: ["127.0.0.1:9192"]
flows:
  - source: primary
    target: dr
`

// flowOf parses clusters plus the given flow keys (indented as keys of the
// first flow) and returns the flow, with its regexps compiled by config.
func flowOf(t *testing.T, keys string) *config.Flow {
	t.Helper()
	cfg, err := config.Parse("kmirror.yaml", []byte(clusters+keys), nil)
	if err != nil {
		t.Fatalf("config.Parse: %v", err)
	}
	if len(cfg.Flows) != 1 {
		t.Fatalf("got %d flows, want 1", len(cfg.Flows))
	}
	return cfg.Flows[0]
}

func TestMatches(t *testing.T) {
	tests := []struct {
		name  string
		keys  string
		match map[string]bool
	}{
		{
			name: "default selects everything but internal and loop topics",
			keys: "",
			match: map[string]bool{
				"orders":               true,
				"a":                    true,
				"primary.orders":       true,  // the flow's own prefix is not the loop prefix
				"dr.orders":            false, // copied by the reverse flow dr -> primary
				"dr.":                  false,
				"dr":                   true, // no dot: not a copy
				"drx.orders":           true,
				"__consumer_offsets":   false,
				"__transaction_state":  false,
				"__kmirror.x.progress": false,
				"_single_underscore":   true,
			},
		},
		{
			name: "include regexes match the whole name",
			keys: `    topics: ["orders", "pay.*"]
`,
			match: map[string]bool{
				"orders":      true,
				"orders2":     false,
				"xorders":     false,
				"my.orders":   false,
				"payments":    true,
				"pay":         true,
				"prepayments": false,
				"__orders":    false,
			},
		},
		{
			name: "alternation is anchored as a whole",
			keys: `    topics: ["a|b"]
`,
			match: map[string]bool{
				"a":  true,
				"b":  true,
				"ab": false,
				"xa": false,
				"bx": false,
			},
		},
		{
			name: "exclude wins over include and is anchored",
			keys: `    topics: ["orders.*"]
    topics_exclude: ['orders\.tmp\..*', "orders-archive"]
`,
			match: map[string]bool{
				"orders":            true,
				"orders.eu":         true,
				"orders.tmp.1":      false,
				"orders.tmp":        true, // 'orders\.tmp\..*' needs the dot after tmp
				"orders-archive":    false,
				"orders-archive-2":  true, // exclude is a full match
				"orders.tmp.1.more": false,
			},
		},
		{
			name: "internal topics never match even when included explicitly",
			keys: `    topics: ["__consumer_offsets", "__.*", ".*"]
`,
			match: map[string]bool{
				"__consumer_offsets":               false,
				"__kmirror.primary-to-dr.progress": false,
				"__x":                              false,
				"_x":                               true,
			},
		},
		{
			name: "identity naming does not skip target-prefixed topics",
			keys: `    topic_naming: identity
`,
			match: map[string]bool{
				"dr.orders":          true,
				"orders":             true,
				"__consumer_offsets": false,
			},
		},
		{
			name: "the heartbeat topic matches although no include regex does",
			keys: `    topics: ["orders"]
    heartbeat_location: source
`,
			match: map[string]bool{
				"orders":          true,
				"heartbeats":      true,
				"heartbeats2":     false,
				"dr.heartbeats":   false, // the reverse flow's copy
				"other-heartbeat": false,
			},
		},
		{
			name: "a custom heartbeat topic matches, the default name no longer does",
			keys: `    topics: ["orders"]
    heartbeat_topic: hb.kmirror
    heartbeat_location: source
`,
			match: map[string]bool{
				"hb.kmirror": true,
				"heartbeats": false,
			},
		},
		{
			name: "heartbeats off: the heartbeat topic is an ordinary topic",
			keys: `    topics: ["orders"]
    heartbeat_interval: off
`,
			match: map[string]bool{
				"orders":     true,
				"heartbeats": false,
			},
		},
		{
			name: "an exclude regex that matches the heartbeat topic leaves it out",
			keys: `    topics_exclude: ["heart.*"]
    heartbeat_location: source
`,
			match: map[string]bool{
				"orders":     true,
				"heartbeats": false,
			},
		},
		{
			name: "heartbeats on the target: the source's heartbeat topic is never copied",
			keys: `    topic_naming: identity
`,
			match: map[string]bool{
				"orders":        true,
				"heartbeats":    false,
				"heartbeats.x":  true,
				"dr.heartbeats": true,
			},
		},
		{
			name: "heartbeats on the target off: the heartbeat topic is an ordinary topic",
			keys: `    heartbeat_interval: off
`,
			match: map[string]bool{
				"heartbeats": true,
			},
		},
		{
			name: "custom prefix still skips the target alias prefix",
			keys: `    topic_prefix: "from-primary-"
`,
			match: map[string]bool{
				"dr.orders":           false,
				"orders":              true,
				"from-primary-orders": true,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := NewTopics(flowOf(t, tc.keys))
			for topic, want := range tc.match {
				if got := p.Matches(topic); got != want {
					t.Errorf("Matches(%q) = %v, want %v", topic, got, want)
				}
			}
		})
	}
}

func TestTargetName(t *testing.T) {
	tests := []struct {
		name   string
		keys   string
		source string
		want   string
	}{
		{"default prefix is source alias", "", "orders", "primary.orders"},
		{"default prefix keeps dots", "", "orders.eu.v1", "primary.orders.eu.v1"},
		{"custom prefix", "    topic_prefix: backup_\n", "orders", "backup_orders"},
		{"explicit prefix naming", "    topic_naming: prefix\n", "orders", "primary.orders"},
		{"identity", "    topic_naming: identity\n", "orders", "orders"},
		{"identity keeps dots", "    topic_naming: identity\n", "primary.orders", "primary.orders"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := NewTopics(flowOf(t, tc.keys))
			if got := p.TargetName(tc.source); got != tc.want {
				t.Errorf("TargetName(%q) = %q, want %q", tc.source, got, tc.want)
			}
		})
	}
}

func TestStatusTopic(t *testing.T) {
	if got, want := StatusTopic("primary-to-dr"), "__kmirror.primary-to-dr.status"; got != want {
		t.Errorf("StatusTopic = %q, want %q", got, want)
	}
	if !IsInternal(StatusTopic("x")) {
		t.Errorf("StatusTopic is not internal")
	}
}

func TestOwnershipGroup(t *testing.T) {
	tests := []struct{ keys, want string }{
		{"", "__kmirror.primary-to-dr.owners"},
		{"    ownership_group: kmirror-dr-owners\n", "kmirror-dr-owners"},
	}
	for _, tc := range tests {
		if got := OwnershipGroup(flowOf(t, tc.keys)); got != tc.want {
			t.Errorf("OwnershipGroup with %q = %q, want %q", tc.keys, got, tc.want)
		}
	}
}

func TestProgressTopic(t *testing.T) {
	tests := []struct{ flow, want string }{
		{"primary-to-dr", "__kmirror.primary-to-dr.progress"},
		{"a.b_c", "__kmirror.a.b_c.progress"},
	}
	for _, tc := range tests {
		got := ProgressTopic(tc.flow)
		if got != tc.want {
			t.Errorf("ProgressTopic(%q) = %q, want %q", tc.flow, got, tc.want)
		}
		if !IsInternal(got) {
			t.Errorf("ProgressTopic(%q) = %q is not internal", tc.flow, got)
		}
	}
	// The default flow name of the config is what names the topic.
	f := flowOf(t, "")
	if got, want := ProgressTopic(f.Name), "__kmirror.primary-to-dr.progress"; got != want {
		t.Errorf("ProgressTopic(default flow name %q) = %q, want %q", f.Name, got, want)
	}
}

func TestHeartbeatTopicOfFlowsSharingClusters(t *testing.T) {
	cfg, err := config.Parse("kmirror.yaml", []byte(`clusters:
  a: {bootstrap_servers: ["127.0.0.1:1"]}
  b: {bootstrap_servers: ["127.0.0.1:2"]}
  c: {bootstrap_servers: ["127.0.0.1:3"]}
flows:
  - {name: ab-orders, source: a, target: b, topics: ["orders.*"], heartbeat_location: source}
  - {name: ab-payments, source: a, target: b, topics: ["payments.*"], heartbeat_location: source}
  - {name: ac, source: a, target: c, heartbeat_location: source}
  - {name: ba, source: b, target: a, heartbeat_location: source}
  - {name: ab-quiet, source: a, target: b, heartbeat_interval: off, heartbeat_location: source}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"ab-orders":   "heartbeats",
		"ab-payments": "heartbeats.ab-payments", // ab-orders copies "heartbeats" from a to b
		"ac":          "heartbeats",
		"ba":          "heartbeats",
		"ab-quiet":    "",
	}
	g := cfg.Topology()
	for _, f := range cfg.Flows {
		p := NewTopics(f).WithGraph(g, f)
		if got := p.HeartbeatTopic(); got != want[f.Name] {
			t.Errorf("flow %s: HeartbeatTopic = %q, want %q", f.Name, got, want[f.Name])
		}
		if got := p.HeartbeatTargetTopic(); got != p.TargetName(want[f.Name]) && want[f.Name] != "" {
			t.Errorf("flow %s: HeartbeatTargetTopic = %q, want %q", f.Name, got, p.TargetName(want[f.Name]))
		}
		if ht := want[f.Name]; ht != "" && !p.Matches(ht) {
			t.Errorf("flow %s does not replicate its heartbeat topic %q", f.Name, ht)
		}
	}
	// No flow copies the heartbeat topic of another flow between the same
	// clusters, though its regexes select it.
	for i, name := range map[int]string{0: "heartbeats.ab-payments", 1: "heartbeats", 4: "heartbeats.ab-payments"} {
		f := cfg.Flows[i]
		f.TopicsRegexps = []*regexp.Regexp{regexp.MustCompile(".*")}
		if NewTopics(f).WithGraph(g, f).Matches(name) {
			t.Errorf("flow %s replicates %q, the heartbeat topic of another flow between a and b", f.Name, name)
		}
	}
	if f := cfg.Flows[2]; !NewTopics(f).WithGraph(g, f).Matches("heartbeats.ab-payments") {
		t.Errorf("flow ac does not replicate heartbeats.ab-payments, an ordinary topic to it")
	}
}

func TestHeartbeatTargetTopic(t *testing.T) {
	cfg, err := config.Parse("kmirror.yaml", []byte(`clusters:
  a: {bootstrap_servers: ["127.0.0.1:1"]}
  b: {bootstrap_servers: ["127.0.0.1:2"]}
flows:
  - {name: ab-orders, source: a, target: b}
  - {name: ab-payments, source: a, target: b, topic_naming: identity}
  - {name: ab-source, source: a, target: b, heartbeat_location: source, topic_prefix: "x."}
  - {name: ab-quiet, source: a, target: b, heartbeat_interval: off}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		flow, source, target string
	}{
		// On the target every flow writes its own key to one topic.
		{flow: "ab-orders", source: "", target: "heartbeats"},
		{flow: "ab-payments", source: "", target: "heartbeats"},
		// On the source, the third flow between a and b has a topic of
		// its own, found on the target under its prefixed name.
		{flow: "ab-source", source: "heartbeats.ab-source", target: "x.heartbeats.ab-source"},
		{flow: "ab-quiet", source: "", target: ""},
	}
	g := cfg.Topology()
	for i, tt := range tests {
		f := cfg.Flows[i]
		p := NewTopics(f).WithGraph(g, f)
		if got := p.HeartbeatTopic(); got != tt.source {
			t.Errorf("flow %s: HeartbeatTopic = %q, want %q", tt.flow, got, tt.source)
		}
		if got := p.HeartbeatTargetTopic(); got != tt.target {
			t.Errorf("flow %s: HeartbeatTargetTopic = %q, want %q", tt.flow, got, tt.target)
		}
	}
}
