// Package check checks a configuration against its clusters without
// changing them: every cluster answers, kmirror's principal has the
// permissions it needs on each side, and what each flow would do (the
// topics it would create, the existing ones and how they differ, what each
// topic regex matches, the groups it would sync, the provenance routes).
//
// Nothing is written: topic creation and config changes are asked with
// validateOnly, permissions that only a write would show are reported as
// not checked.
package check

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/topicsync"
)

// Report is the outcome of a check.
type Report struct {
	Clusters []Cluster
	Flows    []Flow
	// Routes are the provenance routes: for each origin cluster and
	// target, the clusters its records pass (origin first).
	Routes []string `json:",omitempty"`
	// Problems make the check fail: an unreachable cluster, a missing
	// permission, a topic the target would refuse.
	Problems []string `json:",omitempty"`
	// Warnings do not, except an include regex that matches no source
	// topic (EmptyRegexes).
	Warnings []string `json:",omitempty"`
	// EmptyRegexes are the include regexes that match no source topic, as
	// "flow: regex".
	EmptyRegexes []string `json:",omitempty"`
}

// Cluster is whether one cluster answered.
type Cluster struct {
	Alias     string
	Reachable bool
	Principal string
	Error     string `json:",omitempty"`
	Took      time.Duration
}

// Flow is what one flow would do.
type Flow struct {
	Name, Source, Target string
	Skipped              string       `json:",omitempty"` // why the flow was not checked
	Regexes              []RegexMatch `json:",omitempty"`
	Create               []TopicPlan  `json:",omitempty"` // target topics it would create
	Existing             []TopicPlan  `json:",omitempty"` // target topics that exist already
	HeartbeatTopic       string       `json:",omitempty"`
	StateTopics          []string     `json:",omitempty"` // __kmirror topics, "(exists)" or "(would be created)"
	Groups               []string     `json:",omitempty"` // source groups whose offsets it would sync
	Permissions          []Permission `json:",omitempty"`
	// SourceACLs is every ACL the flow needs on its source, as lines
	// such as `READ, DESCRIBE on topic "orders"`; with the default
	// configuration all of them only read (see SourceReadOnly).
	SourceACLs []string `json:",omitempty"`
	// SourceReadOnly is false when the flow writes to its source
	// (heartbeat_location: source).
	SourceReadOnly bool
	// SourcePrincipal is kmirror's principal on the source, "" if not
	// known (no SASL: the brokers' own mapping names it).
	SourcePrincipal string        `json:",omitempty"`
	Took            time.Duration `json:",omitempty"`
}

// RegexMatch is what one include regex of a flow matches among the source
// topics (internal topics left out, before topics_exclude).
type RegexMatch struct {
	Regex   string
	Matches []string
}

// TopicPlan is a source topic and its target topic.
type TopicPlan struct {
	Source, Target string
	Partitions     int32             // source partitions
	Configs        map[string]string `json:",omitempty"` // explicit configs the target gets
	// For an existing target topic: its partitions, and the config
	// changes config sync would make.
	TargetPartitions int32    `json:",omitempty"`
	ConfigChanges    []string `json:",omitempty"`
	Mismatch         string   `json:",omitempty"`
}

// Permission is one permission kmirror needs, as docs/security.md names
// it, and whether the check found it.
type Permission struct {
	Cluster   string // alias
	Operation string // READ, CREATE, ...
	Resource  string // topic "x", group "y", cluster
	Status    string // "ok", "MISSING" or "not checked: why"
}

// Permission statuses.
const (
	OK      = "ok"
	Missing = "MISSING"
)

// Failed reports whether the check failed: problems, or regexes that match
// nothing unless allowEmpty.
func (r *Report) Failed(allowEmpty bool) bool {
	return len(r.Problems) > 0 || (!allowEmpty && len(r.EmptyRegexes) > 0)
}

// Run checks cfg. Each cluster must answer within its dial_timeout (plus
// one request_timeout for the requests after); the whole check is
// bounded by ctx.
func Run(ctx context.Context, cfg *config.Config, logger *slog.Logger) *Report {
	r := &Report{}
	aliases := slices.Sorted(maps.Keys(cfg.Clusters))
	clients := map[string]*kgo.Client{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	r.Clusters = make([]Cluster, len(aliases))
	for i, alias := range aliases {
		c := cfg.Clusters[alias]
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, res := reach(ctx, c, logger)
			r.Clusters[i] = res
			if cl != nil {
				mu.Lock()
				clients[alias] = cl
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	defer func() {
		for _, cl := range clients {
			cl.Close()
		}
	}()
	for _, c := range r.Clusters {
		if !c.Reachable {
			r.Problems = append(r.Problems, c.Error)
		}
	}
	graph := cfg.Topology()
	for _, fl := range cfg.Flows {
		f := Flow{Name: fl.Name, Source: fl.Source, Target: fl.Target}
		src, dst := clients[fl.Source], clients[fl.Target]
		if src == nil || dst == nil {
			f.Skipped = "a cluster of the flow is unreachable"
			r.Flows = append(r.Flows, f)
			continue
		}
		start := time.Now()
		fc := &flowCheck{r: r, f: &f, fl: fl, cfg: cfg, src: src, dst: dst,
			srcAccess: kafka.AccessOf(cfg.Clusters[fl.Source]), dstAccess: kafka.AccessOf(cfg.Clusters[fl.Target]),
			policy: policy.NewTopics(fl).WithGraph(graph, fl), mutual: graph.Mutual(fl.Source, fl.Target)}
		fc.run(ctx)
		f.Took = time.Since(start)
		r.Flows = append(r.Flows, f)
	}
	for _, origin := range graph.Clusters() {
		for _, target := range graph.Clusters() {
			if route := graph.Route(origin, target); len(route) > 0 {
				r.Routes = append(r.Routes, fmt.Sprintf("records first written to %s reach %s via %s", origin, target, strings.Join(route, " -> ")))
			}
		}
	}
	return r
}

// reach connects to cluster c and pings it within its dial_timeout.
func reach(ctx context.Context, c *config.Cluster, logger *slog.Logger) (*kgo.Client, Cluster) {
	res := Cluster{Alias: c.Alias, Principal: kafka.AccessOf(c).Principal}
	start := time.Now()
	cl, err := kafka.NewClient(c, logger)
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, c.DialTimeout)
		err = kafka.Ping(pctx, cl, c)
		cancel()
		if err != nil {
			cl.Close()
			cl = nil
		}
	}
	res.Took = time.Since(start)
	if err != nil {
		res.Error = err.Error()
		return nil, res
	}
	res.Reachable = true
	return cl, res
}

type flowCheck struct {
	// wanted are the source topics the flow replicates now; srcMax their
	// effective max.message.bytes.
	wanted               []string
	srcMax               map[string]string
	r                    *Report
	f                    *Flow
	fl                   *config.Flow
	cfg                  *config.Config
	src, dst             *kgo.Client
	srcAccess, dstAccess kafka.Access
	policy               *policy.Topics
	// mutual says a flow with provenance writes the other way too.
	mutual bool
}

func (c *flowCheck) problem(format string, args ...any) {
	c.r.Problems = append(c.r.Problems, fmt.Sprintf("flow %s: ", c.fl.Name)+fmt.Sprintf(format, args...))
}

func (c *flowCheck) warn(format string, args ...any) {
	c.r.Warnings = append(c.r.Warnings, fmt.Sprintf("flow %s: ", c.fl.Name)+fmt.Sprintf(format, args...))
}

// perm records permission op on resource of cluster alias with err, the
// outcome of the request that needed it: nil is ok, a refusal is missing
// (and a problem), any other error a problem of its own.
func (c *flowCheck) perm(access kafka.Access, op, resType, name string, err error) {
	res := resType
	if name != "" {
		res = fmt.Sprintf("%s %q", resType, name)
	}
	p := Permission{Cluster: access.Cluster, Operation: op, Resource: res, Status: OK}
	switch {
	case err == nil:
	case kafka.IsDenied(err):
		p.Status = Missing
		c.problem("%v", access.Denied(op, resType, name, err))
	default:
		p.Status = "error: " + err.Error()
		c.problem("cluster %q: %s on %s: %v", access.Cluster, op, res, err)
	}
	c.addPerm(p)
}

func (c *flowCheck) addPerm(p Permission) {
	for _, q := range c.f.Permissions {
		if q.Cluster == p.Cluster && q.Operation == p.Operation && q.Resource == p.Resource {
			return
		}
	}
	c.f.Permissions = append(c.f.Permissions, p)
}

func (c *flowCheck) notChecked(access kafka.Access, op, resType, name, why string) {
	res := resType
	if name != "" {
		res = fmt.Sprintf("%s %q", resType, name)
	}
	c.addPerm(Permission{Cluster: access.Cluster, Operation: op, Resource: res, Status: "not checked: " + why})
}

func (c *flowCheck) run(ctx context.Context) {
	srcAdm, dstAdm := kadm.NewClient(c.src), kadm.NewClient(c.dst)
	topics, err := srcAdm.ListTopics(ctx)
	if err != nil {
		// Listing needs no permission of its own (the brokers leave out
		// the topics kmirror may not describe): a failure is the
		// cluster's.
		c.perm(c.srcAccess, kafka.OpDescribe, kafka.ResCluster, "", err)
		return
	}
	defer c.sourceACLs()
	var names []string
	for name, d := range topics {
		if d.Err == nil && !policy.IsInternal(name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for i, re := range c.fl.TopicsRegexps {
		m := RegexMatch{Regex: c.fl.Topics[i]}
		for _, n := range names {
			if re.MatchString(n) {
				m.Matches = append(m.Matches, n)
			}
		}
		if len(m.Matches) == 0 {
			c.r.EmptyRegexes = append(c.r.EmptyRegexes, fmt.Sprintf("%s: %s", c.fl.Name, c.fl.Topics[i]))
			c.warn("topics regex %q matches no topic of cluster %q (a typo?); it replicates nothing now, and will replicate topics created later that match it", c.fl.Topics[i], c.fl.Source)
		}
		c.f.Regexes = append(c.f.Regexes, m)
	}
	var wanted []string
	for _, n := range names {
		if c.policy.Matches(n) {
			wanted = append(wanted, n)
		}
	}
	if hb := c.policy.HeartbeatTargetTopic(); hb != "" && !c.fl.HeartbeatsOnSource() {
		c.targetHeartbeats(ctx, dstAdm, hb)
	}
	if hb := c.policy.HeartbeatTopic(); hb != "" {
		c.f.HeartbeatTopic = hb
		if _, ok := topics[hb]; !ok {
			c.validateCreate(ctx, c.src, c.srcAccess, hb, 1, -1, map[string]string{"cleanup.policy": "delete"}, "heartbeat topic on the source")
			c.f.HeartbeatTopic += " (would be created on the source)"
		} else {
			c.perm(c.srcAccess, kafka.OpDescribe, kafka.ResTopic, hb, nil)
		}
		c.notChecked(c.srcAccess, kafka.OpWrite, kafka.ResTopic, hb, "a write permission shows only by writing")
		c.notChecked(c.srcAccess, kafka.OpIdempotentWrite, kafka.ResCluster, "", "a write permission shows only by writing")
	}

	srcConfigs, srcMax, srcErrs, reqErr := topicsync.DescribeSourceConfigs(ctx, c.src, wanted)
	c.srcMax = srcMax
	if reqErr != nil {
		c.problem("describing the source topics' configs: %v", reqErr)
	}
	readErrs := probeRead(ctx, c.src, topics, wanted)
	for _, n := range wanted {
		c.perm(c.srcAccess, kafka.OpDescribe, kafka.ResTopic, n, nil)
		c.perm(c.srcAccess, kafka.OpDescribeConfigs, kafka.ResTopic, n, srcErrs[n])
		c.perm(c.srcAccess, kafka.OpRead, kafka.ResTopic, n, readErrs[n])
	}
	c.inboundProgress(ctx, srcAdm)
	c.wanted = wanted
	targetNames := make([]string, len(wanted))
	for i, n := range wanted {
		targetNames[i] = c.policy.TargetName(n)
	}
	rf := int16(c.fl.ReplicationFactor)
	if rf <= 0 {
		rf = -1
	}
	if len(wanted) > 0 {
		tgt, err := dstAdm.ListTopics(ctx, targetNames...)
		if err != nil {
			c.perm(c.dstAccess, kafka.OpDescribe, kafka.ResCluster, "", err)
			return
		}
		var existing []string
		for i, n := range wanted {
			desired := c.withHeadroom(topicsync.DesiredConfigs(c.fl.TopicConfigExcludeRegexps, c.fl.TopicConfigOverrides, srcConfigs[n]), n, nil)
			plan := TopicPlan{Source: n, Target: targetNames[i], Partitions: int32(len(topics[n].Partitions)), Configs: desired}
			d := tgt[targetNames[i]]
			switch {
			case errors.Is(d.Err, kerr.UnknownTopicOrPartition) || (d.Err == nil && d.Topic == ""):
				if srcErrs[n] == nil {
					c.validateCreate(ctx, c.dst, c.dstAccess, plan.Target, plan.Partitions, rf, desired, "target topic")
				}
				c.f.Create = append(c.f.Create, plan)
			case d.Err != nil:
				c.perm(c.dstAccess, kafka.OpDescribe, kafka.ResTopic, targetNames[i], d.Err)
			default:
				c.perm(c.dstAccess, kafka.OpDescribe, kafka.ResTopic, targetNames[i], nil)
				plan.TargetPartitions = int32(len(d.Partitions))
				switch {
				case plan.TargetPartitions < plan.Partitions:
					plan.Mismatch = fmt.Sprintf("target has %d partitions, source %d: kmirror would add %d", plan.TargetPartitions, plan.Partitions, plan.Partitions-plan.TargetPartitions)
					c.notChecked(c.dstAccess, kafka.OpAlter, kafka.ResTopic, plan.Target, "adding partitions has no validate-only form used here")
				case plan.TargetPartitions > plan.Partitions:
					plan.Mismatch = fmt.Sprintf("target has %d partitions, more than the source's %d: records keep their partition, the extra ones stay empty", plan.TargetPartitions, plan.Partitions)
					c.warn("target topic %q: %s", plan.Target, plan.Mismatch)
				}
				c.f.Existing = append(c.f.Existing, plan)
				existing = append(existing, plan.Target)
			}
		}
		c.existingConfigs(ctx, existing)
	}
	for _, st := range []string{policy.ProgressTopic(c.fl.Name), policy.StatusTopic(c.fl.Name), policy.CheckpointTopic(c.fl.Name)} {
		c.stateTopic(ctx, dstAdm, st, rf)
	}
	c.notChecked(c.dstAccess, kafka.OpWrite, "topics", "", "a write permission shows only by writing")
	c.notChecked(c.dstAccess, kafka.OpIdempotentWrite, kafka.ResCluster, "", "a write permission shows only by writing")
	c.notChecked(c.dstAccess, kafka.OpRead, kafka.ResGroup, policy.OwnershipGroup(c.fl), "joining the ownership group would change it")
	if c.fl.ExactlyOnce {
		c.notChecked(c.dstAccess, kafka.OpWrite, kafka.ResTransactionalID, policy.TransactionalIDPrefix(c.fl.Name)+"* (prefixed)",
			"initialising a transactional producer would change it")
	}
	if c.fl.SyncGroupOffsets {
		c.groups(ctx, srcAdm)
	}
	if c.fl.ACLs != config.ACLsOff {
		_, err := srcAdm.DescribeACLs(ctx, kadm.NewACLs().AnyResource().Operations(kadm.OpAny).ResourcePatternType(kadm.ACLPatternAny))
		if errors.Is(err, kerr.SecurityDisabled) {
			c.warn("acls: %s: the source cluster has no authorizer, there are no ACLs to copy", c.fl.ACLs)
			err = nil
		}
		c.perm(c.srcAccess, kafka.OpDescribe, kafka.ResCluster, "", err)
		c.notChecked(c.dstAccess, kafka.OpAlter, kafka.ResCluster, "", "creating ACLs has no validate-only form")
	}
	slices.SortStableFunc(c.f.Permissions, func(a, b Permission) int {
		if a.Cluster != b.Cluster {
			if a.Cluster == c.fl.Source {
				return -1
			}
			return 1
		}
		return 0
	})
}

// validateCreate asks cluster cl, with validateOnly, whether it would
// create topic as kmirror would.
func (c *flowCheck) validateCreate(ctx context.Context, cl *kgo.Client, access kafka.Access, topic string, partitions int32, rf int16, configs map[string]string, what string) {
	req := kmsg.NewPtrCreateTopicsRequest()
	req.ValidateOnly = true
	req.TimeoutMillis = 30000
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic = topic
	rt.NumPartitions = partitions
	rt.ReplicationFactor = rf
	for _, k := range slices.Sorted(maps.Keys(configs)) {
		rc := kmsg.NewCreateTopicsRequestTopicConfig()
		rc.Name = k
		rc.Value = kmsg.StringPtr(configs[k])
		rt.Configs = append(rt.Configs, rc)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err == nil {
		if len(resp.Topics) == 0 {
			err = errors.New("no answer for the topic")
		} else if err = kerr.ErrorForCode(resp.Topics[0].ErrorCode); err != nil && resp.Topics[0].ErrorMessage != nil {
			err = fmt.Errorf("%w (%s)", err, *resp.Topics[0].ErrorMessage)
		}
	}
	if errors.Is(err, kerr.TopicAlreadyExists) {
		err = nil
	}
	if err != nil && !kafka.IsDenied(err) {
		c.problem("cluster %q would refuse to create %s %q (%d partitions, configs %v): %v", access.Cluster, what, topic, partitions, configs, err)
		c.addPerm(Permission{Cluster: access.Cluster, Operation: kafka.OpCreate, Resource: fmt.Sprintf("topic %q", topic), Status: "error: " + err.Error()})
		return
	}
	c.perm(access, kafka.OpCreate, kafka.ResTopic, topic, err)
}

// existingConfigs compares the configs of the existing target topics with
// what config sync would give them and checks, with validateOnly, that it
// may change them.
func (c *flowCheck) existingConfigs(ctx context.Context, targets []string) {
	if len(targets) == 0 {
		return
	}
	tgt, errs, reqErr := topicsync.DescribeTopicConfigs(ctx, c.dst, targets)
	if reqErr != nil {
		c.problem("describing the target topics' configs: %v", reqErr)
		return
	}
	req := kmsg.NewPtrIncrementalAlterConfigsRequest()
	req.ValidateOnly = true
	for i := range c.f.Existing {
		p := &c.f.Existing[i]
		c.perm(c.dstAccess, kafka.OpDescribeConfigs, kafka.ResTopic, p.Target, errs[p.Target])
		if errs[p.Target] != nil {
			continue
		}
		p.Configs = c.withHeadroom(p.Configs, p.Source, tgt[p.Target])
		p.ConfigChanges = topicsync.ConfigChanges(p.Configs, tgt[p.Target])
		if len(p.ConfigChanges) == 0 {
			continue
		}
		rr := kmsg.NewIncrementalAlterConfigsRequestResource()
		rr.ResourceType = kmsg.ConfigResourceTypeTopic
		rr.ResourceName = p.Target
		for _, k := range slices.Sorted(maps.Keys(p.Configs)) {
			if tgt[p.Target][k] == p.Configs[k] {
				continue
			}
			rc := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
			rc.Name, rc.Op, rc.Value = k, kmsg.IncrementalAlterConfigOpSet, kmsg.StringPtr(p.Configs[k])
			rr.Configs = append(rr.Configs, rc)
		}
		req.Resources = append(req.Resources, rr)
	}
	if len(req.Resources) == 0 {
		return
	}
	resp, err := req.RequestWith(ctx, c.dst)
	if err != nil {
		c.problem("checking config changes on the target: %v", err)
		return
	}
	for _, r := range resp.Resources {
		err := kerr.ErrorForCode(r.ErrorCode)
		if err != nil && !kafka.IsDenied(err) {
			if r.ErrorMessage != nil {
				err = fmt.Errorf("%w (%s)", err, *r.ErrorMessage)
			}
			c.problem("cluster %q would refuse the config changes of topic %q: %v", c.dstAccess.Cluster, r.ResourceName, err)
			continue
		}
		c.perm(c.dstAccess, kafka.OpAlterConfigs, kafka.ResTopic, r.ResourceName, err)
	}
}

// stateTopic checks one of the flow's state topics on the target.
func (c *flowCheck) stateTopic(ctx context.Context, adm *kadm.Client, topic string, rf int16) {
	td, err := adm.ListTopics(ctx, topic)
	if err != nil {
		c.perm(c.dstAccess, kafka.OpDescribe, kafka.ResTopic, topic, err)
		return
	}
	d := td[topic]
	switch {
	case errors.Is(d.Err, kerr.UnknownTopicOrPartition) || (d.Err == nil && d.Topic == ""):
		c.validateCreate(ctx, c.dst, c.dstAccess, topic, 1, rf, map[string]string{"cleanup.policy": "compact"}, "state topic")
		c.f.StateTopics = append(c.f.StateTopics, topic+" (would be created)")
	case d.Err != nil:
		c.perm(c.dstAccess, kafka.OpDescribe, kafka.ResTopic, topic, d.Err)
	default:
		c.perm(c.dstAccess, kafka.OpDescribe, kafka.ResTopic, topic, nil)
		c.f.StateTopics = append(c.f.StateTopics, topic+" (exists)")
	}
}

// groups lists the source groups the flow would sync and checks that
// they can be described on the source and the target.
func (c *flowCheck) groups(ctx context.Context, srcAdm *kadm.Client) {
	listed, err := srcAdm.ListGroups(ctx)
	if err != nil {
		c.perm(c.srcAccess, kafka.OpDescribe, kafka.ResCluster, "", err)
		return
	}
	for _, g := range listed.Groups() {
		if matchAny(c.fl.GroupsRegexps, g) && !matchAny(c.fl.GroupsExcludeRegexps, g) {
			c.f.Groups = append(c.f.Groups, g)
		}
	}
	slices.Sort(c.f.Groups)
	if len(c.f.Groups) == 0 {
		return
	}
	check := func(adm *kadm.Client, access kafka.Access) {
		described, err := adm.DescribeGroups(ctx, c.f.Groups...)
		if err != nil && !errors.Is(err, kerr.GroupAuthorizationFailed) {
			c.problem("describing groups on cluster %q: %v", access.Cluster, err)
			return
		}
		for _, g := range c.f.Groups {
			err := described[g].Err
			if errors.Is(err, kerr.GroupIDNotFound) {
				err = nil // not on the target yet: the first commit creates it
			}
			c.perm(access, kafka.OpDescribe, kafka.ResGroup, g, err)
		}
	}
	check(srcAdm, c.srcAccess)
	// On the target, describing a group would make a broker that never
	// had a group create its offsets topic: not asked.
	c.notChecked(c.dstAccess, kafka.OpDescribe+", "+kafka.OpRead, "groups", "", "committing offsets would change them, and describing one can create the target's offsets topic")
}

func matchAny(res []*regexp.Regexp, s string) bool {
	for _, re := range res {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

// targetHeartbeats checks the heartbeat topic the flow writes to on its
// target (heartbeat_location: target): it exists, or the target would
// create it.
func (c *flowCheck) targetHeartbeats(ctx context.Context, adm *kadm.Client, topic string) {
	c.f.HeartbeatTopic = topic + " on " + c.fl.Target
	td, err := adm.ListTopics(ctx, topic)
	if err != nil {
		c.perm(c.dstAccess, kafka.OpDescribe, kafka.ResTopic, topic, err)
		return
	}
	switch d := td[topic]; {
	case errors.Is(d.Err, kerr.UnknownTopicOrPartition) || (d.Err == nil && d.Topic == ""):
		c.validateCreate(ctx, c.dst, c.dstAccess, topic, 1, -1, map[string]string{"cleanup.policy": "delete"}, "heartbeat topic on the target")
		c.f.HeartbeatTopic += " (would be created)"
	case d.Err != nil:
		c.perm(c.dstAccess, kafka.OpDescribe, kafka.ResTopic, topic, d.Err)
	default:
		c.perm(c.dstAccess, kafka.OpDescribe, kafka.ResTopic, topic, nil)
		c.f.HeartbeatTopic += " (exists)"
	}
}

// inboundProgress checks that kmirror may read, on the flow's source, the
// progress topics of the configuration's flows that write into it: the
// provenance check reads them to tell the records those flows wrote.
func (c *flowCheck) inboundProgress(ctx context.Context, adm *kadm.Client) {
	var names []string
	for _, other := range c.cfg.Flows {
		if other.Target == c.fl.Source {
			names = append(names, policy.ProgressTopic(other.Name))
		}
	}
	if len(names) == 0 {
		return
	}
	td, err := adm.ListTopics(ctx, names...)
	if err != nil {
		c.perm(c.srcAccess, kafka.OpDescribe, kafka.ResTopic, names[0], err)
		return
	}
	var present []string
	for _, n := range names {
		d := td[n]
		switch {
		case errors.Is(d.Err, kerr.UnknownTopicOrPartition) || (d.Err == nil && d.Topic == ""):
			// Describable, not written yet: its READ shows once it is.
			c.perm(c.srcAccess, kafka.OpDescribe, kafka.ResTopic, n, nil)
			c.notChecked(c.srcAccess, kafka.OpRead, kafka.ResTopic, n, "the topic does not exist yet")
		case d.Err != nil:
			c.perm(c.srcAccess, kafka.OpDescribe, kafka.ResTopic, n, d.Err)
		default:
			c.perm(c.srcAccess, kafka.OpDescribe, kafka.ResTopic, n, nil)
			present = append(present, n)
		}
	}
	readErrs := probeRead(ctx, c.src, td, present)
	for _, n := range present {
		c.perm(c.srcAccess, kafka.OpRead, kafka.ResTopic, n, readErrs[n])
	}
}

// probeRead asks cluster cl, in one Fetch request for partition 0 of each
// topic (at most one byte, no wait), whether kmirror may read them. Only
// an authorization error counts: a broker that is not the leader, or an
// offset out of range, still answered after the READ check passed. The
// request changes nothing. details gives the topics' IDs.
func probeRead(ctx context.Context, cl *kgo.Client, details kadm.TopicDetails, topics []string) map[string]error {
	out := map[string]error{}
	if len(topics) == 0 {
		return out
	}
	req := kmsg.NewPtrFetchRequest()
	req.ReplicaID = -1
	req.MaxWaitMillis = 0
	req.MinBytes = 0
	req.MaxBytes = 1
	byID := map[[16]byte]string{}
	for _, n := range topics {
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = n
		rt.TopicID = details[n].ID
		byID[rt.TopicID] = n
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition = 0
		rp.FetchOffset = 0
		rp.PartitionMaxBytes = 1
		rp.CurrentLeaderEpoch = -1
		rp.LogStartOffset = -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err == nil {
		err = kerr.ErrorForCode(resp.ErrorCode)
	}
	if err != nil {
		for _, n := range topics {
			out[n] = err
		}
		return out
	}
	for _, rt := range resp.Topics {
		name := rt.Topic
		if name == "" {
			name = byID[rt.TopicID]
		}
		for _, rp := range rt.Partitions {
			if err := kerr.ErrorForCode(rp.ErrorCode); err != nil && kafka.IsDenied(err) {
				out[name] = err
			}
		}
	}
	return out
}

// sourceACLs lists every ACL the flow needs on its source, for
// docs/security.md's read-only set: it is printed whatever the check
// found, so that it can be handed to the source's administrators.
func (c *flowCheck) sourceACLs() {
	c.f.SourcePrincipal = c.srcAccess.Principal
	c.f.SourceReadOnly = !c.fl.HeartbeatsOnSource()
	topics := "the replicated topics"
	if len(c.wanted) > 0 {
		topics = "topics " + quoteList(c.wanted, 10)
	}
	acls := []string{
		fmt.Sprintf("READ, DESCRIBE on %s (replication; a prefixed ACL also covers topics created later)", topics),
		fmt.Sprintf("DESCRIBE_CONFIGS on %s (topic config sync)", topics),
	}
	if c.fl.SyncGroupOffsets {
		groups := "the synced groups"
		if len(c.f.Groups) > 0 {
			groups = "groups " + quoteList(c.f.Groups, 10)
		}
		acls = append(acls, fmt.Sprintf("DESCRIBE on %s (group offset sync reads their committed offsets)", groups))
	}
	acls = append(acls, fmt.Sprintf(`READ, DESCRIBE on topics prefixed %q (the progress of flows that write into %s, read by the provenance check)`, policy.InternalPrefix+".", c.fl.Source))
	if c.fl.ACLs != config.ACLsOff {
		acls = append(acls, fmt.Sprintf("DESCRIBE on the cluster (acls: %s reads the source's ACLs)", c.fl.ACLs))
	}
	if c.fl.HeartbeatsOnSource() {
		acls = append(acls, fmt.Sprintf("CREATE, WRITE, DESCRIBE on topic %q (heartbeat_location: source writes heartbeats there; the default, target, does not)", c.policy.HeartbeatTopic()))
	}
	c.f.SourceACLs = acls
}

// quoteList quotes up to max names, and counts the others.
func quoteList(names []string, limit int) string {
	q := make([]string, 0, min(len(names), limit))
	for _, n := range names[:min(len(names), limit)] {
		q = append(q, fmt.Sprintf("%q", n))
	}
	s := strings.Join(q, ", ")
	if len(names) > limit {
		s += fmt.Sprintf(" and %d more", len(names)-limit)
	}
	return s
}

// withHeadroom gives desired, the configs of the target topic of source
// topic source, the max.message.bytes topic sync gives it when the flow
// writes the provenance header; target holds the target topic's explicit
// configs, nil if it does not exist.
func (c *flowCheck) withHeadroom(desired map[string]string, source string, target map[string]string) map[string]string {
	if !c.fl.UsesProvenance() {
		return desired
	}
	keep := topicsync.KeepsMaxMessageBytes(c.fl.TopicConfigExcludeRegexps, c.fl.TopicConfigOverrides)
	return topicsync.WithHeadroom(desired, c.srcMax[source], target, keep, c.mutual)
}
