package groupsync

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/topology"
)

// Peers is what a flow's group sync learns from the other flows of its
// configuration, read from Kafka at the start of every pass (Load):
//
//   - the records other writers put into the flow's target topics, so
//     that a translation never passes one the group has not read in any
//     form (Limit): in active-active, the target's own producers write
//     between the flow's copies, and their records reach the group's
//     cluster through the reverse flow, at offsets the group may not have
//     reached;
//   - the group offsets kmirror itself committed on the flow's source
//     (Echo): the flows writing into the source store a checkpoint for
//     each commit they make there, and an offset equal to a group's
//     newest checkpoint was written by kmirror, not by a consumer, so it is
//     never translated back to where it came from.
//
// Only flows with identity naming have peers: with prefixed names no other
// writer shares a target topic and no group offset comes back under the
// same name.
type Peers struct {
	flow           *config.Flow
	graph          *topology.Graph
	byName         map[string]*config.Flow
	source, target *kgo.Client

	// reads are the progress topics Load reads: flow name → the client of
	// the cluster holding it.
	reads map[string]*kgo.Client
	// echoes are the flows whose checkpoints Load reads (on the source).
	echoes []string

	loaded map[string]progress.Loaded
	failed map[string]error
	// written holds, by group and partition of the source, the target
	// offsets of the newest checkpoint of each flow into the source.
	written map[key][]int64
}

// NewPeers returns the peers of flow fc of cfg, with clients of the flow's
// source and target, or nil when the flow has none.
func NewPeers(cfg *config.Config, fc *config.Flow, source, target *kgo.Client) *Peers {
	if cfg == nil || fc.TopicNaming != policy.NamingIdentity {
		return nil
	}
	p := &Peers{flow: fc, graph: cfg.Topology(), byName: map[string]*config.Flow{}, source: source, target: target,
		reads: map[string]*kgo.Client{}}
	for _, o := range cfg.Flows {
		if o == fc || o.TopicNaming != policy.NamingIdentity {
			continue
		}
		p.byName[o.Name] = o
		switch {
		case o.Target == fc.Source:
			// Copies into the group's cluster: the reverse flow and
			// the direct flows of other origins, stored there; their
			// checkpoints name the offsets kmirror committed there.
			p.reads[o.Name] = source
			p.echoes = append(p.echoes, o.Name)
		case o.Target == fc.Target && o.Source != fc.Source:
			// Another origin's copies into our target, stored there.
			p.reads[o.Name] = target
		}
	}
	if len(p.reads) == 0 {
		return nil
	}
	return p
}

// Load reads the peers' progress and checkpoints. A progress topic that
// cannot be read makes Limit round down for the topics it concerns (see
// Unproven); the error is returned in warn. Checkpoints that cannot be read
// are an error: without them an offset kmirror wrote could be carried back.
func (p *Peers) Load(ctx context.Context) (warn error, err error) {
	if p == nil {
		return nil, nil
	}
	p.loaded, p.failed = map[string]progress.Loaded{}, map[string]error{}
	for name, cl := range p.reads {
		l, lerr := progress.NewStore(cl, policy.ProgressTopic(name)).Load(ctx)
		if lerr != nil {
			p.failed[name] = lerr
			warn = fmt.Errorf("reading the progress of flow %q: %w", name, lerr)
			continue
		}
		p.loaded[name] = l
	}
	written := map[key][]int64{}
	for _, name := range p.echoes {
		cps, cerr := NewStore(p.source, policy.CheckpointTopic(name)).Load(ctx)
		if cerr != nil {
			return warn, fmt.Errorf("reading the checkpoints of flow %q on %q: %w", name, p.flow.Source, cerr)
		}
		for _, c := range cps {
			k := key{c.Group, c.TargetTopic, c.Partition}
			written[k] = append(written[k], c.TargetOffset)
		}
	}
	p.written = written
	return warn, nil
}

// Echo reports whether group's committed offset at on partition of the
// flow's source topic is one a flow writing into the source committed
// there: it equals the target offset of that flow's newest checkpoint of
// the group. Such an offset was not committed by a consumer of the source,
// and is not translated back.
func (p *Peers) Echo(group, topic string, partition int32, at int64) bool {
	if p == nil {
		return false
	}
	return slices.Contains(p.written[key{group, topic, partition}], at)
}

// flowBetween returns the identity flow from source to target, or nil.
func (p *Peers) flowBetween(source, target string) *config.Flow {
	for _, o := range p.byName {
		if o.Source == source && o.Target == target {
			return o
		}
	}
	return nil
}

// copies reports whether flow o copies topic under the same name.
func (p *Peers) copies(o *config.Flow, topic string) bool {
	n := policy.NewTopics(o).WithGraph(p.graph, o)
	return n.Matches(topic) && n.TargetName(topic) == topic
}

// Limit returns the target offset that the translation of committed
// source offset src on partition of source topic must not pass: the first
// record of the target partition, other than the flow's own copies (own,
// the flow's offset map), that the group has not read in any form on the
// source. ok is false when no other writer's records reach the group's
// cluster (active-passive): the flow's own map then answers alone.
//
// For each cluster whose records are in the target topic, other than the
// flow's source:
//
//   - records the reverse flow copies to the source (the target's own, or
//     others it passes on): the first whose copy lies at or after src, or
//     the first the reverse flow has not read yet, past the flow's own
//     copies;
//   - records of another cluster that has direct flows to both clusters:
//     the first whose copy on the source lies at or after src, found in
//     that cluster's flow to the source, and where that flow to the
//     target wrote it;
//   - otherwise, or when a flow's progress cannot be read, nothing is
//     known: the first record of the target partition that is not the
//     flow's own copy (Unproven).
//
// Records of a cluster that never reach the group's cluster are not
// counted.
func (p *Peers) Limit(topic string, partition int32, src int64, own []offsets.Run) (offsets.Limit, bool) {
	if p == nil {
		return offsets.Limit{}, false
	}
	fc := p.flow
	limit, ok := int64(math.MaxInt64), false
	// tight: one writer's records bound the translation, and the limit is
	// its first unread record, not rounded down.
	tight, legs := false, 0
	for _, x := range p.graph.Clusters() {
		if x == fc.Source {
			continue
		}
		if x != fc.Target {
			rw := p.graph.Route(x, fc.Target)
			if len(rw) < 2 || rw[len(rw)-2] == fc.Source {
				continue // none on the target, or the flow's own copies
			}
		}
		re := p.graph.Route(x, fc.Source)
		if len(re) < 2 {
			continue // never reaches the group's cluster
		}
		via := re[len(re)-2]
		switch {
		case via == fc.Target:
			rev := p.flowBetween(fc.Target, fc.Source)
			if rev == nil || !p.copies(rev, topic) {
				continue
			}
			ok = true
			legs++
			l, loaded := p.loaded[rev.Name]
			if !loaded {
				limit = min(limit, Unproven(own))
				continue
			}
			id := progress.Partition{Topic: topic, Partition: partition}
			next := int64(0)
			if pos, has := l.Positions[id]; has {
				next = pos.SourceNext
			}
			u, exact := offsets.FirstCopyAtOrAfter(l.Runs[id], next, src)
			limit, tight = min(limit, offsets.PastOwn(own, u)), exact
		case via == x && len(p.graph.Route(x, fc.Target)) == 2:
			toSrc, toTgt := p.flowBetween(x, fc.Source), p.flowBetween(x, fc.Target)
			if toSrc == nil || toTgt == nil || !p.copies(toSrc, topic) || !p.copies(toTgt, topic) {
				continue
			}
			ok = true
			legs++
			ls, okS := p.loaded[toSrc.Name]
			lt, okT := p.loaded[toTgt.Name]
			if !okS || !okT {
				limit = min(limit, Unproven(own))
				continue
			}
			id := progress.Partition{Topic: topic, Partition: partition}
			pt, has := lt.Positions[id]
			if !has {
				continue // none of x's records on the target partition
			}
			next := int64(0)
			if ps, has := ls.Positions[id]; has {
				next = ps.SourceNext
			}
			v, _ := offsets.FirstCopyAtOrAfter(ls.Runs[id], next, src)
			// Where x's first record from v on lies on the target: by
			// the map; past the copies it holds, x's next copy lands
			// after the flow's position there, our copies aside.
			runs := lt.Runs[id]
			var at int64
			if n := len(runs); n == 0 || v >= runs[n-1].SourceEnd() {
				at = offsets.PastOwn(own, max(pt.TargetNext, 0))
			} else {
				at = offsets.NewMap(runs).Translate(v, pt.TargetNext).Target
			}
			limit = min(limit, at)
		default:
			ok = true
			legs++
			limit = min(limit, Unproven(own))
		}
	}
	return offsets.Limit{At: limit, Tight: tight && legs == 1}, ok
}

// Unproven is the limit when nothing is known of the other writers'
// records: the first target offset that is not one of the flow's own
// copies (own).
func Unproven(own []offsets.Run) int64 { return offsets.PastOwn(own, 0) }
