package aclsync

import (
	"regexp"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/policy"
)

// Modes of ACL sync, as the flow's acls key names them.
const (
	ModeSafe   = config.ACLsSafe
	ModeMirror = config.ACLsMirror
)

// wildcard is the resource name and principal that stand for every topic,
// group or user.
const (
	wildcardName      = "*"
	wildcardPrincipal = "User:*"
)

// Rules decide which source ACLs a flow copies and what each becomes on
// the target. The zero value copies nothing.
type Rules struct {
	// Mode is ModeSafe or ModeMirror.
	Mode string
	// Topics reports whether the flow replicates the source topic (the
	// flow's topic policy). Used for LITERAL topic ACLs.
	Topics func(name string) bool
	// TargetName maps a source topic name, or a prefix of names, to the
	// target's (the flow's naming).
	TargetName func(name string) string
	// TopicsInclude and TopicsExclude are the flow's topic regexes,
	// anchored; used for PREFIXED topic ACLs.
	TopicsInclude, TopicsExclude []*regexp.Regexp
	// NeverTopicPrefix starts the names of source topics the flow never
	// replicates whatever its regexes say ("" if none): with prefix
	// naming, the topics the reverse flow copied into the source.
	NeverTopicPrefix string
	// GroupsInclude and GroupsExclude are the flow's group regexes,
	// anchored.
	GroupsInclude, GroupsExclude []*regexp.Regexp
	// Own is kmirror's principal on the target ("User:kmirror"), "" if
	// it is not known. ACLs naming it are never created or deleted.
	Own string
}

// RulesOf returns the rules of flow f, whose topic policy is topics, with
// own as kmirror's principal on the target.
func RulesOf(f *config.Flow, topics *policy.Topics, own string) Rules {
	r := Rules{
		Mode:          f.ACLs,
		Topics:        topics.Matches,
		TargetName:    topics.TargetName,
		TopicsInclude: f.TopicsRegexps, TopicsExclude: f.TopicsExcludeRegexps,
		GroupsInclude: f.GroupsRegexps, GroupsExclude: f.GroupsExcludeRegexps,
		Own: own,
	}
	if f.TopicNaming == config.NamingPrefix {
		r.NeverTopicPrefix = f.Target + "."
	}
	return r
}

// Map returns what source ACL b becomes on the target, and false if the
// flow does not copy it.
func (r Rules) Map(b Binding) (Binding, bool) {
	if !b.valid() || b.Name == wildcardName || b.Name == "" {
		return Binding{}, false
	}
	// A DENY for every user would deny kmirror too on the replica.
	if b.Permission == kmsg.ACLPermissionTypeDeny && b.Principal == wildcardPrincipal {
		return Binding{}, false
	}
	switch b.Resource {
	case kmsg.ACLResourceTypeTopic:
		if !r.copiesTopic(b) {
			return Binding{}, false
		}
		b.Name = r.TargetName(b.Name)
	case kmsg.ACLResourceTypeGroup:
		if !r.copiesGroup(b) {
			return Binding{}, false
		}
	}
	if r.Mode != ModeMirror {
		var ok bool
		if b, ok = safe(b); !ok {
			return Binding{}, false
		}
	}
	if r.Protected(b) {
		return Binding{}, false
	}
	return b, true
}

// copiesTopic reports whether the flow copies topic ACL b.
func (r Rules) copiesTopic(b Binding) bool {
	if r.Topics == nil || r.TargetName == nil {
		return false
	}
	if b.Pattern == kmsg.ACLResourcePatternTypeLiteral {
		return r.Topics(b.Name)
	}
	p := b.Name
	if policy.IsInternal(p) || (r.NeverTopicPrefix != "" && strings.HasPrefix(p, r.NeverTopicPrefix)) {
		return false
	}
	return prefixSelected(p, r.TopicsInclude, r.TopicsExclude)
}

// copiesGroup reports whether the flow copies group ACL b.
func (r Rules) copiesGroup(b Binding) bool {
	if b.Pattern == kmsg.ACLResourcePatternTypeLiteral {
		return matchesAny(r.GroupsInclude, b.Name) && !matchesAny(r.GroupsExclude, b.Name)
	}
	return prefixSelected(b.Name, r.GroupsInclude, r.GroupsExclude)
}

// Protected reports whether target ACL b is one kmirror never creates or
// deletes: it names kmirror's own principal, or a resource kmirror keeps
// its state in (names starting with __kmirror, and prefixes that cover
// them).
func (r Rules) Protected(b Binding) bool {
	if r.Own != "" && b.Principal == r.Own {
		return true
	}
	if strings.HasPrefix(b.Name, policy.InternalPrefix) {
		return true
	}
	return b.Pattern == kmsg.ACLResourcePatternTypePrefixed && strings.HasPrefix(policy.InternalPrefix, b.Name)
}

// safe returns b as safe mode copies it, and false if it is not copied.
// As MirrorMaker 2: DENY is copied as it is; ALLOW ALL becomes ALLOW READ
// (which lets the principal DESCRIBE too). Unlike MirrorMaker 2, which
// drops ALLOW WRITE only, every ALLOW but READ, DESCRIBE and
// DESCRIBE_CONFIGS is dropped: WRITE, CREATE, DELETE, ALTER,
// ALTER_CONFIGS, IDEMPOTENT_WRITE would let the principal change the
// replica or its offsets behind kmirror.
func safe(b Binding) (Binding, bool) {
	if b.Permission == kmsg.ACLPermissionTypeDeny {
		return b, true
	}
	switch b.Operation {
	case kmsg.ACLOperationRead, kmsg.ACLOperationDescribe, kmsg.ACLOperationDescribeConfigs:
		return b, true
	case kmsg.ACLOperationAll:
		b.Operation = kmsg.ACLOperationRead
		return b, true
	}
	return Binding{}, false
}

// Want returns the target ACLs that the source ACLs src map to.
func (r Rules) Want(src []Binding) map[Binding]bool {
	want := map[Binding]bool{}
	for _, b := range src {
		if t, ok := r.Map(b); ok {
			want[t] = true
		}
	}
	return want
}

func matchesAny(res []*regexp.Regexp, name string) bool {
	for _, re := range res {
		if re.MatchString(name) {
			return true
		}
	}
	return false
}

// prefixSelected reports whether a PREFIXED ACL on prefix concerns names
// the include and exclude regexes select: some include regex can match a
// name starting with prefix, and no exclude regex matches every such name.
func prefixSelected(prefix string, include, exclude []*regexp.Regexp) bool {
	selected := false
	for _, re := range include {
		if canMatchPrefixed(re, prefix) {
			selected = true
			break
		}
	}
	if !selected {
		return false
	}
	for _, re := range exclude {
		if matchesAllPrefixed(re, prefix) {
			return false
		}
	}
	return true
}
