package config

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/kmirror/kmirror/internal/topology"
)

// metadataKeys decodes the keys of a flow about topic configs, topic
// deletion, ACLs, provenance, heartbeats and continuous verification.
func (d *decoder) metadataKeys(m *mapping, fl *Flow) {
	if f := m.get("topic_config_exclude"); f != nil {
		fl.TopicConfigExclude, fl.TopicConfigExcludeRegexps = nil, nil
		d.regexes(f, &fl.TopicConfigExclude, &fl.TopicConfigExcludeRegexps)
	}
	if f := m.get("topic_config_overrides"); f != nil {
		fl.TopicConfigOverrides = d.configOverrides(f)
	}
	if f := m.get("scale_out"); f != nil {
		d.boolean(f, &fl.ScaleOut)
	}
	if f := m.get("delete_topics"); f != nil {
		d.boolean(f, &fl.DeleteTopics)
	}
	if f := m.get("acls"); f != nil {
		d.enum(f, &fl.ACLs, ACLsOff, ACLsSafe, ACLsMirror)
	}
	if f := m.get("provenance"); f != nil {
		d.enum(f, &fl.Provenance, ProvenanceAuto, ProvenanceAlways, ProvenanceOff)
	}
	if f := m.get("heartbeat_interval"); f != nil {
		if v := f.val.Value; f.val.Tag != "!!null" && (strings.EqualFold(v, "off") || v == "0") {
			fl.HeartbeatInterval = 0
		} else {
			d.duration(f, &fl.HeartbeatInterval, 100*time.Millisecond, 10*time.Minute)
		}
	}
	if f := m.get("heartbeat_location"); f != nil {
		d.enum(f, &fl.HeartbeatLocation, HeartbeatTarget, HeartbeatSource)
	}
	if f := m.get("verify_interval"); f != nil {
		if v := f.val.Value; f.val.Tag != "!!null" && (strings.EqualFold(v, "off") || v == "0") {
			fl.VerifyInterval = 0
		} else {
			d.duration(f, &fl.VerifyInterval, time.Minute, 24*time.Hour)
		}
	}
	if f := m.get("ownership_group"); f != nil {
		var name string
		if d.nonEmpty(f, &name, "a consumer group name") {
			key := [2]string{fl.Target, name}
			switch prev := d.groups[key]; {
			case !groupNameRE.MatchString(name) || len(name) > maxGroupLen:
				d.errorf(f.val, f.path, "invalid group name %q; expected 1 to %d letters, digits, '.', '_', '-' or ':'", name, maxGroupLen)
			case prev != nil:
				d.errorf(f.val, f.path, "ownership group %q on cluster %q is also the one of %s on line %d; expected one group per flow", name, fl.Target, prev.path, prev.val.Line)
			default:
				if d.groups == nil {
					d.groups = map[[2]string]*field{}
				}
				d.groups[key] = f
				fl.OwnershipGroup = name
			}
		}
	}
	if f := m.get("heartbeat_topic"); f != nil {
		var name string
		if d.nonEmpty(f, &name, "a topic name") {
			if !topicCharsRE.MatchString(name) || len(name) > maxTopicLen || name == "." || name == ".." || strings.HasPrefix(name, "__") {
				d.errorf(f.val, f.path, "invalid topic name %q; expected 1 to %d letters, digits, '.', '_' or '-', not starting with \"__\"", name, maxTopicLen)
			} else {
				fl.HeartbeatTopic = name
			}
		}
	}
}

// configOverrides decodes topic_config_overrides: a mapping of topic
// config keys to values.
func (d *decoder) configOverrides(f *field) map[string]string {
	m := d.mapping(f, "a mapping of topic config keys to values, such as {min.insync.replicas: 2}", "")
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m.order))
	for _, key := range m.order {
		kf := m.fields[key]
		if !topicConfigKeyRE.MatchString(key) {
			d.errorf(kf.key, kf.path, "invalid topic config key %q; expected a key such as retention.ms", key)
			continue
		}
		if v, ok := d.scalar(kf, "a config value such as 2 or delete"); ok {
			out[key] = v
		}
	}
	return out
}

// topicConfigKeyRE is what a topic config key looks like.
var topicConfigKeyRE = regexp.MustCompile(`^[a-z0-9]+([._-][a-z0-9]+)*$`)

// validateTopology rejects flows that would copy records in a loop or
// collide on one target topic, naming the flows.
func (d *decoder) validateTopology(flows []*Flow) {
	edges := make([]topology.Edge, 0, len(flows))
	lines := map[string]int{}
	for _, fl := range flows {
		if fl.Name == "" || fl.Source == "" || fl.Target == "" {
			return // already reported
		}
		edges = append(edges, Edge(fl))
		lines[fl.Name] = fl.Line
	}
	for _, p := range topology.New(edges).Validate() {
		line := 0
		for _, name := range p.Flows {
			if l := lines[name]; l > line {
				line = l
			}
		}
		d.errs = append(d.errs, &Error{File: d.file, Line: line, Key: "flows", Msg: p.Msg})
	}
}

// Edge describes flow fl for package topology.
func Edge(fl *Flow) topology.Edge {
	return topology.Edge{
		Flow: fl.Name, Source: fl.Source, Target: fl.Target,
		Identity:   fl.TopicNaming == NamingIdentity,
		Prefix:     fl.TopicPrefix,
		Provenance: fl.UsesProvenance(),
	}
}

// Topology returns the graph of the configuration's flows.
func (c *Config) Topology() *topology.Graph {
	edges := make([]topology.Edge, len(c.Flows))
	for i, fl := range c.Flows {
		edges[i] = Edge(fl)
	}
	return topology.New(edges)
}

// Flow returns the flow named name, or an error naming the flows there
// are.
func (c *Config) Flow(name string) (*Flow, error) {
	names := make([]string, 0, len(c.Flows))
	for _, f := range c.Flows {
		if f.Name == name {
			return f, nil
		}
		names = append(names, f.Name)
	}
	return nil, fmt.Errorf("%s: no flow named %q; flows: %s", c.File, name, strings.Join(names, ", "))
}
