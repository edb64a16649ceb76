package aclsync

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/policy"
)

const clusters = `clusters:
  src:
    bootstrap_servers: ["127.0.0.1:9092"]
  dst:
    bootstrap_servers: ["127.0.0.1:9192"]
flows:
  - source: src
    target: dst
`

// rulesOf parses clusters plus the given flow keys (indented as keys of
// the first flow) and returns the flow's rules with kmirror as
// User:kmirror.
func rulesOf(t *testing.T, keys string) Rules {
	t.Helper()
	cfg, err := config.Parse("kmirror.yaml", []byte(clusters+keys), nil)
	if err != nil {
		t.Fatalf("config.Parse: %v", err)
	}
	f := cfg.Flows[0]
	return RulesOf(f, policy.NewTopics(f).WithGraph(cfg.Topology(), f), "User:kmirror")
}

const (
	topic    = kmsg.ACLResourceTypeTopic
	group    = kmsg.ACLResourceTypeGroup
	literal  = kmsg.ACLResourcePatternTypeLiteral
	prefixed = kmsg.ACLResourcePatternTypePrefixed
	allow    = kmsg.ACLPermissionTypeAllow
	deny     = kmsg.ACLPermissionTypeDeny

	opAll     = kmsg.ACLOperationAll
	opRead    = kmsg.ACLOperationRead
	opWrite   = kmsg.ACLOperationWrite
	opCreate  = kmsg.ACLOperationCreate
	opDelete  = kmsg.ACLOperationDelete
	opAlter   = kmsg.ACLOperationAlter
	opDescr   = kmsg.ACLOperationDescribe
	opDescCfg = kmsg.ACLOperationDescribeConfigs
	opAltCfg  = kmsg.ACLOperationAlterConfigs
	opIdem    = kmsg.ACLOperationIdempotentWrite
)

func acl(res kmsg.ACLResourceType, pat kmsg.ACLResourcePatternType, name, principal string, op kmsg.ACLOperation, perm kmsg.ACLPermissionType) Binding {
	return Binding{Resource: res, Name: name, Pattern: pat, Principal: principal, Host: "*", Operation: op, Permission: perm}
}

func TestMap(t *testing.T) {
	const (
		prefixNaming   = "    topic_naming: prefix\n"
		identityNaming = "    topic_naming: identity\n"
		safeMode       = "    acls: safe\n"
		mirrorMode     = "    acls: mirror\n"
		orders         = "    topics: [\"orders.*\", \"payments\"]\n    topics_exclude: [\"orders\\\\.tmp.*\"]\n"
		alice          = "User:alice"
	)
	none := Binding{}
	tests := []struct {
		name string
		keys string
		in   Binding
		want Binding // zero: not copied
	}{
		// Topic names and the flow's selection.
		{"literal topic, prefix naming", prefixNaming + mirrorMode, acl(topic, literal, "orders", alice, opRead, allow), acl(topic, literal, "src.orders", alice, opRead, allow)},
		{"literal topic, identity naming", identityNaming + mirrorMode, acl(topic, literal, "orders", alice, opRead, allow), acl(topic, literal, "orders", alice, opRead, allow)},
		{"custom prefix", "    topic_prefix: east-\n" + mirrorMode, acl(topic, literal, "orders", alice, opRead, allow), acl(topic, literal, "east-orders", alice, opRead, allow)},
		{"literal topic not selected", orders + mirrorMode, acl(topic, literal, "refunds", alice, opRead, allow), none},
		{"literal topic excluded", orders + mirrorMode, acl(topic, literal, "orders.tmp1", alice, opRead, allow), none},
		{"literal topic selected", orders + mirrorMode, acl(topic, literal, "orders.eu", alice, opRead, allow), acl(topic, literal, "src.orders.eu", alice, opRead, allow)},
		{"internal topic", mirrorMode, acl(topic, literal, "__consumer_offsets", alice, opRead, allow), none},
		{"topic the reverse flow copied", mirrorMode, acl(topic, literal, "dst.orders", alice, opRead, allow), none},
		{"wildcard topic", mirrorMode, acl(topic, literal, "*", alice, opRead, allow), none},
		{"prefixed topic, prefix naming", prefixNaming + mirrorMode, acl(topic, prefixed, "orders.", alice, opRead, allow), acl(topic, prefixed, "src.orders.", alice, opRead, allow)},
		{"prefixed topic, identity naming", identityNaming + mirrorMode, acl(topic, prefixed, "orders.", alice, opRead, allow), acl(topic, prefixed, "orders.", alice, opRead, allow)},
		{"prefixed topic the regexes can select", orders + mirrorMode, acl(topic, prefixed, "pay", alice, opRead, allow), acl(topic, prefixed, "src.pay", alice, opRead, allow)},
		{"prefixed topic the regexes never select", orders + mirrorMode, acl(topic, prefixed, "refunds", alice, opRead, allow), none},
		{"prefixed topic the excludes cover", orders + mirrorMode, acl(topic, prefixed, "orders.tmp", alice, opRead, allow), none},
		{"prefixed topic partly excluded", orders + mirrorMode, acl(topic, prefixed, "orders.", alice, opRead, allow), acl(topic, prefixed, "src.orders.", alice, opRead, allow)},
		{"prefixed topic, everything excluded", "    topics_exclude: [\".*\"]\n" + mirrorMode, acl(topic, prefixed, "orders", alice, opRead, allow), none},
		{"prefixed internal topics", mirrorMode, acl(topic, prefixed, "__", alice, opRead, allow), none},
		{"prefixed topics the reverse flow copied", mirrorMode, acl(topic, prefixed, "dst.", alice, opRead, allow), none},
		{"prefix covering kmirror's topics", identityNaming + mirrorMode, acl(topic, prefixed, "_", alice, opRead, allow), none},
		{"prefix _s, identity naming", identityNaming + mirrorMode, acl(topic, prefixed, "_s", alice, opRead, allow), acl(topic, prefixed, "_s", alice, opRead, allow)},

		// Groups keep their names; the flow's group regexes select them.
		{"literal group", mirrorMode, acl(group, literal, "billing", alice, opRead, allow), acl(group, literal, "billing", alice, opRead, allow)},
		{"literal group, default exclude", mirrorMode, acl(group, literal, "console-consumer-1", alice, opRead, allow), none},
		{"literal group not selected", "    groups: [\"app-.*\"]\n" + mirrorMode, acl(group, literal, "billing", alice, opRead, allow), none},
		{"prefixed group", "    groups: [\"app-.*\"]\n" + mirrorMode, acl(group, prefixed, "app-", alice, opRead, allow), acl(group, prefixed, "app-", alice, opRead, allow)},
		{"prefixed group the excludes cover", mirrorMode, acl(group, prefixed, "connect-", alice, opRead, allow), none},
		{"prefixed group never selected", "    groups: [\"app-.*\"]\n" + mirrorMode, acl(group, prefixed, "web-", alice, opRead, allow), none},
		{"wildcard group", mirrorMode, acl(group, literal, "*", alice, opRead, allow), none},
		{"kmirror's groups", "    groups_exclude: []\n" + mirrorMode, acl(group, literal, "__kmirror.x.owners", alice, opRead, allow), none},

		// What no mode copies.
		{"kmirror's own principal", mirrorMode, acl(topic, literal, "orders", "User:kmirror", opRead, allow), none},
		{"DENY for every user", mirrorMode, acl(topic, literal, "orders", "User:*", opWrite, deny), none},
		{"ALLOW for every user", mirrorMode, acl(topic, literal, "orders", "User:*", opRead, allow), acl(topic, literal, "src.orders", "User:*", opRead, allow)},
		{"cluster ACL", mirrorMode, acl(kmsg.ACLResourceTypeCluster, literal, "kafka-cluster", alice, opAlter, allow), none},
		{"transactional ID ACL", mirrorMode, acl(kmsg.ACLResourceTypeTransactionalId, literal, "tx", alice, opWrite, allow), none},

		// Mirror copies every operation as it is.
		{"mirror ALLOW WRITE", mirrorMode, acl(topic, literal, "orders", alice, opWrite, allow), acl(topic, literal, "src.orders", alice, opWrite, allow)},
		{"mirror ALLOW ALL", mirrorMode, acl(topic, literal, "orders", alice, opAll, allow), acl(topic, literal, "src.orders", alice, opAll, allow)},
		{"mirror DENY READ", mirrorMode, acl(topic, literal, "orders", alice, opRead, deny), acl(topic, literal, "src.orders", alice, opRead, deny)},
		{"mirror host kept", mirrorMode, Binding{topic, "orders", literal, alice, "10.0.0.1", opRead, allow}, Binding{topic, "src.orders", literal, alice, "10.0.0.1", opRead, allow}},

		// Safe: as MirrorMaker 2, never a grant that changes the replica.
		{"safe ALLOW READ", safeMode, acl(topic, literal, "orders", alice, opRead, allow), acl(topic, literal, "src.orders", alice, opRead, allow)},
		{"safe ALLOW DESCRIBE", safeMode, acl(topic, literal, "orders", alice, opDescr, allow), acl(topic, literal, "src.orders", alice, opDescr, allow)},
		{"safe ALLOW DESCRIBE_CONFIGS", safeMode, acl(topic, literal, "orders", alice, opDescCfg, allow), acl(topic, literal, "src.orders", alice, opDescCfg, allow)},
		{"safe ALLOW ALL becomes READ", safeMode, acl(topic, literal, "orders", alice, opAll, allow), acl(topic, literal, "src.orders", alice, opRead, allow)},
		{"safe ALLOW WRITE", safeMode, acl(topic, literal, "orders", alice, opWrite, allow), none},
		{"safe ALLOW CREATE", safeMode, acl(topic, literal, "orders", alice, opCreate, allow), none},
		{"safe ALLOW DELETE", safeMode, acl(topic, literal, "orders", alice, opDelete, allow), none},
		{"safe ALLOW ALTER", safeMode, acl(topic, literal, "orders", alice, opAlter, allow), none},
		{"safe ALLOW ALTER_CONFIGS", safeMode, acl(topic, literal, "orders", alice, opAltCfg, allow), none},
		{"safe ALLOW IDEMPOTENT_WRITE", safeMode, acl(topic, literal, "orders", alice, opIdem, allow), none},
		{"safe DENY WRITE kept", safeMode, acl(topic, literal, "orders", alice, opWrite, deny), acl(topic, literal, "src.orders", alice, opWrite, deny)},
		{"safe DENY ALL kept", safeMode, acl(topic, literal, "orders", alice, opAll, deny), acl(topic, literal, "src.orders", alice, opAll, deny)},
		{"safe group ALLOW ALL becomes READ", safeMode, acl(group, literal, "billing", alice, opAll, allow), acl(group, literal, "billing", alice, opRead, allow)},
		{"safe group ALLOW DELETE", safeMode, acl(group, literal, "billing", alice, opDelete, allow), none},
		{"safe prefixed ALLOW READ", safeMode, acl(topic, prefixed, "orders", alice, opRead, allow), acl(topic, prefixed, "src.orders", alice, opRead, allow)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := rulesOf(t, tc.keys).Map(tc.in)
			if want := tc.want != none; ok != want || got != tc.want {
				t.Errorf("Map(%v) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, want)
			}
		})
	}
}

func TestProtected(t *testing.T) {
	r := Rules{Own: "User:kmirror"}
	tests := []struct {
		b    Binding
		want bool
	}{
		{acl(topic, literal, "orders", "User:kmirror", opWrite, allow), true},
		{acl(topic, literal, "__kmirror.f.progress", "User:bob", opRead, allow), true},
		{acl(group, prefixed, "__kmirror.", "User:bob", opRead, allow), true},
		{acl(topic, prefixed, "__k", "User:bob", opRead, allow), true},
		{acl(topic, prefixed, "_", "User:bob", opRead, allow), true},
		{acl(topic, literal, "_", "User:bob", opRead, allow), false},
		{acl(topic, literal, "orders", "User:bob", opRead, allow), false},
		{acl(topic, prefixed, "__x", "User:bob", opRead, allow), false},
	}
	for _, tc := range tests {
		if got := r.Protected(tc.b); got != tc.want {
			t.Errorf("Protected(%v) = %v, want %v", tc.b, got, tc.want)
		}
	}
	if (Rules{}).Protected(acl(topic, literal, "orders", "", opRead, allow)) {
		t.Errorf("an unknown own principal protects ACLs with an empty principal")
	}
}

func TestDiff(t *testing.T) {
	a := acl(topic, literal, "src.a", "User:alice", opRead, allow)
	b := acl(topic, literal, "src.b", "User:alice", opRead, allow)
	c := acl(topic, literal, "src.c", "User:alice", opRead, allow)
	d := acl(topic, literal, "src.d", "User:alice", opRead, allow)
	own := acl(topic, literal, "src.a", "User:kmirror", opWrite, allow)
	set := func(bs ...Binding) map[Binding]bool {
		m := map[Binding]bool{}
		for _, x := range bs {
			m[x] = true
		}
		return m
	}
	tests := []struct {
		name                string
		mode                string
		want, have, created map[Binding]bool
		create, del, forget []Binding
	}{
		{"create what the target lacks", ModeMirror, set(a, b), set(a), nil, []Binding{b}, nil, nil},
		// c was there before kmirror: never deleted. b was created by
		// kmirror and its source ACL is gone: deleted in mirror mode.
		{"mirror deletes only what it created", ModeMirror, set(a), set(a, b, c), set(a, b), nil, []Binding{b}, nil},
		{"safe never deletes", ModeSafe, set(a), set(a, b, c), set(a, b), nil, nil, nil},
		{"gone from both: forgotten", ModeMirror, set(a), set(a), set(a, d), nil, nil, []Binding{d}},
		{"gone from both, safe: forgotten", ModeSafe, set(a), set(a), set(a, d), nil, nil, []Binding{d}},
		{"created but missing and wanted: created again", ModeMirror, set(a), nil, set(a), []Binding{a}, nil, nil},
		{"own ACLs never deleted", ModeMirror, nil, set(own), set(own), nil, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Diff(Rules{Mode: tc.mode, Own: "User:kmirror"}, tc.want, tc.have, tc.created)
			check := func(what string, got, want []Binding) {
				if len(got) != len(want) {
					t.Errorf("%s = %v, want %v", what, got, want)
					return
				}
				for i := range got {
					if got[i] != want[i] {
						t.Errorf("%s = %v, want %v", what, got, want)
						return
					}
				}
			}
			check("Create", p.Create, tc.create)
			check("Delete", p.Delete, tc.del)
			check("Forget", p.Forget, tc.forget)
		})
	}
}

func TestKeyRoundTrip(t *testing.T) {
	for _, b := range []Binding{
		acl(topic, literal, "src.orders", "User:alice", opRead, allow),
		{group, "app-", prefixed, "User:CN=x,O=y", "10.0.0.1", kmsg.ACLOperationDescribe, deny},
		acl(topic, literal, `we"ird|name`, "User:a b", opAll, allow),
	} {
		got, err := ParseKey(b.Key())
		if err != nil || got != b {
			t.Errorf("ParseKey(Key(%v)) = %v, %v", b, got, err)
		}
	}
	for _, raw := range []string{`{`, `{"resource":"CLUSTER","pattern":"LITERAL","name":"x","principal":"User:a","host":"*","operation":"READ","permission":"ALLOW"}`,
		`{"resource":"TOPIC","pattern":"MATCH","name":"x","principal":"User:a","host":"*","operation":"READ","permission":"ALLOW"}`,
		`{"resource":"TOPIC","pattern":"LITERAL","name":"x","principal":"User:a","host":"*","operation":"ANY","permission":"ALLOW"}`} {
		if _, err := ParseKey([]byte(raw)); err == nil {
			t.Errorf("ParseKey(%s) succeeded, want an error", raw)
		}
	}
}
