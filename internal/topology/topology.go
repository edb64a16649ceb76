// Package topology reasons about the flows of one configuration as a
// graph of clusters: which combinations would copy records in a loop or
// let two flows collide on one target topic, which flow brings the
// records of each origin cluster to each other cluster in a mesh, and
// which prefixed topic names are copies coming back to where they began.
//
// It knows clusters by their aliases only; mapping the cluster IDs of the
// provenance header to aliases is the caller's work.
package topology

import (
	"fmt"
	"slices"
	"strings"
)

// Edge is one flow: records go from Source to Target.
type Edge struct {
	Flow           string
	Source, Target string // cluster aliases
	// Identity says the target topics have the source topics' names;
	// otherwise they get Prefix.
	Identity bool
	Prefix   string
	// Provenance says the flow reads and writes the provenance header.
	Provenance bool
}

// Graph is the flows of one configuration.
type Graph struct {
	edges []Edge
	// parent[origin][cluster] is the cluster the records of origin reach
	// cluster from, over provenance flows, by the route Route describes.
	parent map[string]map[string]string
	// prefixes maps every topic prefix of a prefix flow to the alias of
	// its source cluster.
	prefixes map[string]string
}

// New returns the graph of edges.
func New(edges []Edge) *Graph {
	g := &Graph{edges: slices.Clone(edges), parent: map[string]map[string]string{}, prefixes: map[string]string{}}
	for _, e := range g.edges {
		if !e.Identity && e.Prefix != "" {
			g.prefixes[e.Prefix] = e.Source
		}
	}
	for _, origin := range g.Clusters() {
		g.parent[origin] = g.routes(origin)
	}
	return g
}

// Clusters returns every cluster alias of the graph, sorted.
func (g *Graph) Clusters() []string {
	var out []string
	for _, e := range g.edges {
		out = append(out, e.Source, e.Target)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Mutual reports whether a flow with provenance copies from cluster target
// into cluster source: records go both ways between them.
func (g *Graph) Mutual(source, target string) bool {
	for _, e := range g.edges {
		if e.Provenance && e.Source == target && e.Target == source {
			return true
		}
	}
	return false
}

// Edges returns the graph's flows in configuration order.
func (g *Graph) Edges() []Edge { return slices.Clone(g.edges) }

// routes is a breadth-first search from origin over provenance flows,
// visiting clusters in alias order, so every instance that reads the same
// configuration picks the same routes: the shortest, ties broken by
// alias.
func (g *Graph) routes(origin string) map[string]string {
	parent := map[string]string{}
	seen := map[string]bool{origin: true}
	frontier := []string{origin}
	for len(frontier) > 0 {
		var next []string
		for _, at := range frontier {
			for _, e := range g.out(at) {
				if seen[e.Target] {
					continue
				}
				seen[e.Target] = true
				parent[e.Target] = at
				next = append(next, e.Target)
			}
		}
		slices.Sort(next)
		frontier = next
	}
	return parent
}

// out returns the provenance flows leaving cluster, sorted by target.
func (g *Graph) out(cluster string) []Edge {
	var out []Edge
	for _, e := range g.edges {
		if e.Provenance && e.Source == cluster {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b Edge) int { return strings.Compare(a.Target, b.Target) })
	return out
}

// Decision is what a flow does with a record, given its origin cluster.
type Decision int

const (
	// Forward: the flow writes the record to its target.
	Forward Decision = iota
	// Routed: another flow of the graph brings records of this origin to
	// the target; writing it here too would duplicate it.
	Routed
)

// Decide says whether the provenance flow source→target forwards a record
// that was first written to cluster origin. A record whose origin is not
// in the graph, or whose target the graph gives no route to from origin,
// is forwarded: only the loop check of the provenance header then applies.
func (g *Graph) Decide(source, target, origin string) Decision {
	parent, ok := g.parent[origin]
	if !ok {
		return Forward
	}
	from, ok := parent[target]
	if !ok || from == source {
		return Forward
	}
	return Routed
}

// Route returns the clusters the records of origin pass on their way to
// target, origin first and target last, or nil if no provenance flows
// lead there.
func (g *Graph) Route(origin, target string) []string {
	parent := g.parent[origin]
	if parent == nil || origin == target {
		return nil
	}
	var rev []string
	for at := target; at != origin; {
		rev = append(rev, at)
		p, ok := parent[at]
		if !ok {
			return nil
		}
		at = p
	}
	rev = append(rev, origin)
	slices.Reverse(rev)
	return rev
}

// ComesBack reports whether topic, read from the source of flow edge e, is
// a prefixed copy of a topic of e's target: the chain of known prefixes at
// the start of its name leads back to the target cluster. Such a topic is
// never copied, whatever the naming of e, so prefixed names cannot grow
// around a cycle (a.b.a.topic).
func (g *Graph) ComesBack(e Edge, topic string) bool {
	for range 64 { // a name of at most 249 characters has few prefixes
		src, rest, ok := g.stripPrefix(topic)
		if !ok {
			return false
		}
		if src == e.Target {
			return true
		}
		topic = rest
	}
	return false
}

// stripPrefix removes the longest known prefix from topic and returns the
// cluster it stands for.
func (g *Graph) stripPrefix(topic string) (cluster, rest string, ok bool) {
	best := ""
	for p := range g.prefixes {
		if len(p) > len(best) && len(p) < len(topic) && strings.HasPrefix(topic, p) {
			best = p
		}
	}
	if best == "" {
		return "", topic, false
	}
	return g.prefixes[best], topic[len(best):], true
}

// Problem is a combination of flows that would copy records in a loop or
// collide. Flows names them, in configuration order.
type Problem struct {
	Flows []string
	Msg   string
}

func (p Problem) Error() string { return p.Msg }

// Validate returns what would loop or collide:
//   - two identity flows into one cluster, one of them without provenance:
//     both write the same topic names there, and neither can tell the
//     other's records from its own;
//   - a cycle of identity flows with a flow without provenance on it: a
//     record would go round for ever.
//
// A cycle with a prefix flow on it ends by itself: the prefixed names are
// recognised when they come back (ComesBack).
func (g *Graph) Validate() []Problem {
	var out []Problem
	for i, a := range g.edges {
		for _, b := range g.edges[i+1:] {
			if a.Target == b.Target && a.Identity && b.Identity && (!a.Provenance || !b.Provenance) {
				off := a.Flow
				if a.Provenance {
					off = b.Flow
				}
				out = append(out, Problem{
					Flows: []string{a.Flow, b.Flow},
					Msg: fmt.Sprintf("flows %q and %q both write into cluster %q with topic_naming: identity, and %q has provenance off, so the same topic names collide there; expected provenance: auto or always on both, or topic_naming: prefix",
						a.Flow, b.Flow, a.Target, off),
				})
			}
		}
	}
	reported := map[string]bool{}
	for _, e := range g.edges {
		if !e.Identity || e.Provenance {
			continue
		}
		path := g.identityPath(e.Target, e.Source)
		if path == nil {
			continue
		}
		cycle := append([]Edge{e}, path...)
		names := make([]string, len(cycle))
		for i, c := range cycle {
			names[i] = c.Flow
		}
		key := strings.Join(slices.Sorted(slices.Values(names)), "\x00")
		if reported[key] {
			continue
		}
		reported[key] = true
		hops := []string{cycle[0].Source}
		for _, c := range cycle {
			hops = append(hops, c.Target)
		}
		out = append(out, Problem{
			Flows: names,
			Msg: fmt.Sprintf("flows %s copy topics with topic_naming: identity in a cycle (%s) and %q has provenance off, so records would be copied round for ever; expected provenance: auto or always on every flow of the cycle, or topic_naming: prefix on one of them",
				quoteAll(names), strings.Join(hops, " -> "), e.Flow),
		})
	}
	return out
}

// identityPath returns a shortest chain of identity flows from cluster
// from to cluster to, or nil if there is none.
func (g *Graph) identityPath(from, to string) []Edge {
	prev := map[string]Edge{}
	seen := map[string]bool{from: true}
	frontier := []string{from}
	for len(frontier) > 0 {
		var next []string
		for _, at := range frontier {
			for _, e := range g.edges {
				if !e.Identity || e.Source != at || seen[e.Target] {
					continue
				}
				seen[e.Target] = true
				prev[e.Target] = e
				if e.Target == to {
					var path []Edge
					for c := to; c != from; c = prev[c].Source {
						path = append(path, prev[c])
					}
					slices.Reverse(path)
					return path
				}
				next = append(next, e.Target)
			}
		}
		frontier = next
	}
	return nil
}

func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}
