package topology

import (
	"reflect"
	"strings"
	"testing"
)

func mesh(clusters ...string) []Edge {
	var out []Edge
	for _, a := range clusters {
		for _, b := range clusters {
			if a != b {
				out = append(out, Edge{Flow: a + "-to-" + b, Source: a, Target: b, Identity: true, Provenance: true})
			}
		}
	}
	return out
}

func TestDecideFullMesh(t *testing.T) {
	g := New(mesh("a", "b", "c"))
	tests := []struct {
		source, target, origin string
		want                   Decision
	}{
		{"a", "b", "a", Forward},
		{"a", "c", "a", Forward},
		{"b", "c", "a", Routed}, // a→c is direct
		{"c", "b", "a", Routed},
		{"b", "a", "c", Routed},
		{"a", "b", "unknown", Forward},
	}
	for _, tt := range tests {
		if got := g.Decide(tt.source, tt.target, tt.origin); got != tt.want {
			t.Errorf("Decide(%s→%s, origin %s) = %v, want %v", tt.source, tt.target, tt.origin, got, tt.want)
		}
	}
}

func TestDecideLine(t *testing.T) {
	// a ↔ b ↔ c: records of a reach c through b.
	g := New([]Edge{
		{Flow: "ab", Source: "a", Target: "b", Identity: true, Provenance: true},
		{Flow: "ba", Source: "b", Target: "a", Identity: true, Provenance: true},
		{Flow: "bc", Source: "b", Target: "c", Identity: true, Provenance: true},
		{Flow: "cb", Source: "c", Target: "b", Identity: true, Provenance: true},
	})
	if got := g.Decide("b", "c", "a"); got != Forward {
		t.Errorf("b→c for origin a = %v, want Forward", got)
	}
	if got := g.Route("a", "c"); !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Errorf("Route(a, c) = %v", got)
	}
	if got := g.Route("a", "a"); got != nil {
		t.Errorf("Route(a, a) = %v, want nil", got)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		edges []Edge
		want  []string // substrings of the problems, in order; nil = none
	}{
		{"mesh with provenance", mesh("a", "b", "c"), nil},
		{"active-active prefix without provenance", []Edge{
			{Flow: "ab", Source: "a", Target: "b", Prefix: "a."},
			{Flow: "ba", Source: "b", Target: "a", Prefix: "b."},
		}, nil},
		{"active-active identity, one side off", []Edge{
			{Flow: "ab", Source: "a", Target: "b", Identity: true, Provenance: true},
			{Flow: "ba", Source: "b", Target: "a", Identity: true},
		}, []string{`flows "ba", "ab" copy topics with topic_naming: identity in a cycle (b -> a -> b)`}},
		{"aggregation identity without provenance", []Edge{
			{Flow: "ac", Source: "a", Target: "c", Identity: true},
			{Flow: "bc", Source: "b", Target: "c", Identity: true, Provenance: true},
		}, []string{`flows "ac" and "bc" both write into cluster "c"`}},
		{"aggregation prefix", []Edge{
			{Flow: "ac", Source: "a", Target: "c", Prefix: "a."},
			{Flow: "bc", Source: "b", Target: "c", Prefix: "b."},
		}, nil},
		{"identity ring of three, one off", []Edge{
			{Flow: "ab", Source: "a", Target: "b", Identity: true, Provenance: true},
			{Flow: "bc", Source: "b", Target: "c", Identity: true, Provenance: true},
			{Flow: "ca", Source: "c", Target: "a", Identity: true},
		}, []string{`flows "ca", "ab", "bc"`}},
		{"ring with a prefix flow", []Edge{
			{Flow: "ab", Source: "a", Target: "b", Identity: true},
			{Flow: "bc", Source: "b", Target: "c", Identity: true},
			{Flow: "ca", Source: "c", Target: "a", Prefix: "c."},
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := New(tt.edges).Validate()
			if len(got) != len(tt.want) {
				t.Fatalf("problems = %v, want %d", got, len(tt.want))
			}
			for i, p := range got {
				if !strings.Contains(p.Msg, tt.want[i]) {
					t.Errorf("problem %d = %q, want it to contain %q", i, p.Msg, tt.want[i])
				}
			}
		})
	}
}

func TestComesBack(t *testing.T) {
	edges := []Edge{
		{Flow: "ab", Source: "a", Target: "b", Prefix: "a."},
		{Flow: "bc", Source: "b", Target: "c", Prefix: "east-"},
		{Flow: "ca", Source: "c", Target: "a", Prefix: "c."},
	}
	g := New(edges)
	tests := []struct {
		edge  Edge
		topic string
		want  bool
	}{
		{edges[0], "orders", false},
		{edges[0], "c.east-a.orders", true}, // chain c, b: b is the target
		{edges[1], "a.orders", false},
		{edges[2], "east-a.orders", true}, // chain b, a: back to a
		{edges[1], "c.east-a.orders", true},
		{edges[0], "c.east-orders", true}, // chain c, b
		{edges[0], "a.", false},           // the prefix alone is not a copy
	}
	for _, tt := range tests {
		if got := g.ComesBack(tt.edge, tt.topic); got != tt.want {
			t.Errorf("ComesBack(%s, %q) = %v, want %v", tt.edge.Flow, tt.topic, got, tt.want)
		}
	}
}
