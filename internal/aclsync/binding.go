// Package aclsync keeps a target cluster's topic and group ACLs in step
// with a source cluster's, for one flow.
//
// Rules decides, without any I/O, which source ACLs a flow copies and what
// each becomes on the target: topic names mapped by the flow's naming,
// topics and groups filtered by the flow's regexes, and, in safe mode,
// permissions that would change a replica dropped or narrowed as
// MirrorMaker 2 does. Syncer runs one pass against both clusters: it
// describes their ACLs, creates what the target lacks and, in mirror mode,
// deletes the ACLs it created earlier whose source ACL is gone. Store
// keeps the record of the ACLs kmirror created in a compacted topic of the
// target, so that this holds across restarts.
package aclsync

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Binding is one ACL: a resource pattern (type, name, pattern type) and
// an entry (principal, host, operation, permission).
type Binding struct {
	Resource   kmsg.ACLResourceType        // TOPIC or GROUP
	Name       string                      // the topic or group name, or prefix
	Pattern    kmsg.ACLResourcePatternType // LITERAL or PREFIXED
	Principal  string                      // User:alice
	Host       string                      // * or an address
	Operation  kmsg.ACLOperation
	Permission kmsg.ACLPermissionType // ALLOW or DENY
}

// String is the binding as one readable line, as kafka-acls.sh lists it.
func (b Binding) String() string {
	return fmt.Sprintf("%s %s:%s:%q %s %s on host %s", b.Permission, b.Resource, b.Pattern, b.Name, b.Principal, b.Operation, b.Host)
}

// key is the binding as it is stored: readable names, fixed field order.
type key struct {
	Resource   string `json:"resource"`
	Pattern    string `json:"pattern"`
	Name       string `json:"name"`
	Principal  string `json:"principal"`
	Host       string `json:"host"`
	Operation  string `json:"operation"`
	Permission string `json:"permission"`
}

// Key encodes b as the key of its record in the state topic.
func (b Binding) Key() []byte {
	k, _ := json.Marshal(key{
		Resource: b.Resource.String(), Pattern: b.Pattern.String(), Name: b.Name,
		Principal: b.Principal, Host: b.Host,
		Operation: b.Operation.String(), Permission: b.Permission.String(),
	})
	return k
}

// ParseKey decodes a key written by Key.
func ParseKey(raw []byte) (Binding, error) {
	var k key
	if err := json.Unmarshal(raw, &k); err != nil {
		return Binding{}, fmt.Errorf("ACL record key %q: %w", raw, err)
	}
	var b Binding
	var err error
	b.Name, b.Principal, b.Host = k.Name, k.Principal, k.Host
	if b.Resource, err = kmsg.ParseACLResourceType(k.Resource); err != nil {
		return Binding{}, fmt.Errorf("ACL record key %q: %w", raw, err)
	}
	if b.Pattern, err = kmsg.ParseACLResourcePatternType(k.Pattern); err != nil {
		return Binding{}, fmt.Errorf("ACL record key %q: %w", raw, err)
	}
	if b.Operation, err = kmsg.ParseACLOperation(k.Operation); err != nil {
		return Binding{}, fmt.Errorf("ACL record key %q: %w", raw, err)
	}
	if b.Permission, err = kmsg.ParseACLPermissionType(k.Permission); err != nil {
		return Binding{}, fmt.Errorf("ACL record key %q: %w", raw, err)
	}
	if !b.valid() {
		return Binding{}, fmt.Errorf("ACL record key %q: not a topic or group ACL with a literal or prefixed name", raw)
	}
	return b, nil
}

// valid reports whether b is an ACL this package handles.
func (b Binding) valid() bool {
	return (b.Resource == kmsg.ACLResourceTypeTopic || b.Resource == kmsg.ACLResourceTypeGroup) &&
		(b.Pattern == kmsg.ACLResourcePatternTypeLiteral || b.Pattern == kmsg.ACLResourcePatternTypePrefixed) &&
		(b.Permission == kmsg.ACLPermissionTypeAllow || b.Permission == kmsg.ACLPermissionTypeDeny) &&
		b.Operation > kmsg.ACLOperationAny
}

// compare orders bindings by resource type, name, pattern, principal,
// host, operation and permission.
func compare(a, b Binding) int {
	switch {
	case a.Resource != b.Resource:
		return int(a.Resource) - int(b.Resource)
	case a.Name != b.Name:
		return strings.Compare(a.Name, b.Name)
	case a.Pattern != b.Pattern:
		return int(a.Pattern) - int(b.Pattern)
	case a.Principal != b.Principal:
		return strings.Compare(a.Principal, b.Principal)
	case a.Host != b.Host:
		return strings.Compare(a.Host, b.Host)
	case a.Operation != b.Operation:
		return int(a.Operation) - int(b.Operation)
	}
	return int(a.Permission) - int(b.Permission)
}

// Sorted returns the bindings of set in a stable order.
func Sorted(set map[Binding]bool) []Binding {
	out := make([]Binding, 0, len(set))
	for b := range set {
		out = append(out, b)
	}
	slices.SortFunc(out, compare)
	return out
}
