// Package policy decides which source topics a flow replicates and what
// they are called on the target.
package policy

import (
	"regexp"
	"strings"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/topology"
)

// InternalPrefix starts the name of every topic kmirror itself creates.
const InternalPrefix = "__kmirror"

// Naming policies.
const (
	NamingPrefix   = "prefix"
	NamingIdentity = "identity"
)

// Topics is a flow's topic policy: filters and naming.
type Topics struct {
	include, exclude []*regexp.Regexp
	naming           string
	prefix           string
	// loopPrefix is the prefix the reverse flow gives topics it copies into
	// this flow's source; such topics are never copied back.
	loopPrefix string
	// graph, if set, is every flow of the configuration; edge is this
	// flow in it. Topics whose prefixed names come back to the target
	// are never copied.
	graph *topology.Graph
	edge  topology.Edge
	// heartbeat is the flow's heartbeat topic when it writes heartbeats
	// to the source: it is replicated whatever the include regexes say.
	// otherHeartbeats are those of the other flows between the same two
	// clusters, which they copy: never this one.
	heartbeat       string
	otherHeartbeats map[string]bool
	// targetHeartbeat is the flow's heartbeat topic when it writes
	// heartbeats to the target: the source topic of that name is never
	// replicated (it holds the heartbeats of flows into the source, and
	// with identity naming its copy would be this flow's own topic).
	targetHeartbeat string
}

// NewTopics builds the topic policy of flow f.
func NewTopics(f *config.Flow) *Topics {
	p := &Topics{
		include:    f.TopicsRegexps,
		exclude:    f.TopicsExcludeRegexps,
		naming:     f.TopicNaming,
		prefix:     f.TopicPrefix,
		loopPrefix: f.Target + ".",
	}
	switch {
	case f.HeartbeatsOnSource():
		p.heartbeat = f.HeartbeatTopic
	case f.HeartbeatInterval > 0:
		p.targetHeartbeat = f.HeartbeatTopic
	}
	return p
}

// WithGraph makes p also skip the source topics whose chain of known topic
// prefixes leads back to the flow's target cluster (a.b.a.topic), so that
// prefixed names cannot grow around a cycle of flows; g holds every flow
// of the configuration. It returns p.
//
// Among the flows between the same two clusters, only the first in the
// configuration copies heartbeat_topic; each other one writes and copies
// heartbeat_topic + "." + its name (see HeartbeatTopic), and none copies
// another's, whatever its regexes say: two flows copying one source topic
// into one target topic would write every record there twice. The flows
// between two clusters are taken to share one heartbeat_topic.
func (p *Topics) WithGraph(g *topology.Graph, f *config.Flow) *Topics {
	p.graph, p.edge = g, config.Edge(f)
	p.otherHeartbeats = map[string]bool{}
	first := true
	for _, e := range g.Edges() {
		if e.Source != f.Source || e.Target != f.Target {
			continue
		}
		own := e.Flow == f.Name
		topic := f.HeartbeatTopic
		if !first {
			topic += "." + e.Flow
		}
		switch {
		case !own:
			p.otherHeartbeats[topic] = true
		case p.heartbeat != "":
			p.heartbeat = topic
		}
		first = false
	}
	return p
}

// HeartbeatTopic is the source topic the flow writes its heartbeats to
// and replicates (heartbeat_location: source), or "" when it writes none
// there: heartbeat_topic, or, when an earlier flow of the configuration
// (with WithGraph) copies the same source cluster to the same target,
// heartbeat_topic + "." + the flow's name.
func (p *Topics) HeartbeatTopic() string { return p.heartbeat }

// HeartbeatTargetTopic is the topic of the target cluster where the
// flow's heartbeats are found, or "" when it writes none: the copy of
// HeartbeatTopic with heartbeat_location: source, heartbeat_topic itself
// with heartbeat_location: target, where every flow into the cluster
// writes its own heartbeats (keyed by the flow's name) to one topic.
func (p *Topics) HeartbeatTargetTopic() string {
	if p.heartbeat != "" {
		return p.TargetName(p.heartbeat)
	}
	return p.targetHeartbeat
}

// IsInternal reports whether topic is a Kafka or kmirror internal topic,
// which no flow ever replicates.
func IsInternal(topic string) bool {
	return strings.HasPrefix(topic, "__")
}

// Matches reports whether the flow replicates source topic name.
//
// A flow that writes heartbeats to the source replicates its heartbeat
// topic (HeartbeatTopic) even if no include regex matches it; an exclude
// regex that matches it still leaves it out. A flow that writes them to
// the target never replicates the source topic named heartbeat_topic.
func (p *Topics) Matches(name string) bool {
	if IsInternal(name) {
		return false
	}
	if p.naming == NamingPrefix && strings.HasPrefix(name, p.loopPrefix) {
		return false
	}
	if p.graph != nil && p.graph.ComesBack(p.edge, name) {
		return false
	}
	if p.otherHeartbeats[name] || (p.targetHeartbeat != "" && name == p.targetHeartbeat) {
		return false
	}
	for _, re := range p.exclude {
		if re.MatchString(name) {
			return false
		}
	}
	if p.heartbeat != "" && name == p.heartbeat {
		return true
	}
	for _, re := range p.include {
		if re.MatchString(name) {
			return true
		}
	}
	return false
}

// TargetName is the name source topic name gets on the target cluster.
func (p *Topics) TargetName(name string) string {
	if p.naming == NamingPrefix {
		return p.prefix + name
	}
	return name
}

// OwnershipGroup is the group, on the target cluster, whose members are
// the processes running flow: ownership_group, else
// __kmirror.<flow>.owners.
func OwnershipGroup(flow *config.Flow) string {
	if flow.OwnershipGroup != "" {
		return flow.OwnershipGroup
	}
	return InternalPrefix + "." + flow.Name + ".owners"
}

// ProgressTopic is the name of the internal compacted topic, on the target
// cluster, that holds the progress of flow.
func ProgressTopic(flow string) string {
	return InternalPrefix + "." + flow + ".progress"
}

// StatusTopic is the name of the internal compacted topic, on the target
// cluster, that holds the status record of flow, for kmirror status.
func StatusTopic(flow string) string {
	return InternalPrefix + "." + flow + ".status"
}

// CheckpointTopic is the name of the internal compacted topic, on the
// target cluster, that holds the consumer group checkpoints of flow.
func CheckpointTopic(flow string) string {
	return InternalPrefix + "." + flow + ".checkpoints"
}

// TransactionalIDPrefix is the prefix of the transactional IDs of an
// exactly-once flow's target producers, for an ACL on the prefix.
func TransactionalIDPrefix(flow string) string {
	return InternalPrefix + "." + flow + ".txn."
}

// TransactionalID is the transactional ID of the target producer of an
// exactly-once flow in the instance named instance. Each instance has its
// own: the writers of one flow are fenced through the ownership group's
// generation (see replicate.Transactions), and a new run of the same
// instance fences its previous run's producer.
func TransactionalID(flow, instance string) string {
	return TransactionalIDPrefix(flow) + instance
}
