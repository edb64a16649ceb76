// Package mm2import turns a MirrorMaker 2 configuration (the
// mm2.properties file of connect-mirror-maker.sh) into an equivalent
// kmirror YAML configuration.
//
// Convert maps the clusters, their security settings, the enabled
// replication flows and the MirrorMaker 2 properties kmirror has an
// equivalent for; every property it cannot map is returned as a Note with
// the reason. Secrets are never copied: passwords become ${VAR}
// references, returned as Env so that the caller can tell the user what
// to set. Java key stores become ${VAR:-} references to PEM files, with
// the command that converts them.
//
// The mapping is described in docs/migrate-from-mm2.md.
package mm2import

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// Note is a property that was not mapped, or mapped with a caveat.
type Note struct {
	Property string // the key as written, such as "tasks.max"
	Line     int    // its line in the file; 0 if it has none
	Reason   string
}

func (n Note) String() string {
	if n.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", n.Line, n.Property, n.Reason)
	}
	return n.Property + ": " + n.Reason
}

// EnvVar is an environment variable the generated configuration refers
// to, which the user sets before running kmirror.
type EnvVar struct {
	Name string
	What string // what it holds, such as `password of SASL user "mm2" on cluster "A"`
}

// Result is a converted configuration.
type Result struct {
	YAML  []byte
	Env   []EnvVar
	Notes []Note
}

// MirrorMaker 2's defaults that differ from kmirror's.
var (
	mm2TopicsExclude = []string{`.*[\-\.]internal`, `.*\.replica`, `__.*`}
	mm2GroupsExclude = []string{`console-consumer-.*`, `connect-.*`, `__.*`}
)

// Convert converts the mm2.properties content data.
func Convert(data []byte) (*Result, error) {
	props, err := ParseProperties(data)
	if err != nil {
		return nil, err
	}
	c := &converter{props: map[string]Property{}, used: map[string]bool{}}
	for _, p := range props {
		c.props[p.Key] = p
		c.order = append(c.order, p.Key)
	}
	return c.convert()
}

type converter struct {
	props    map[string]Property
	order    []string
	used     map[string]bool
	notes    []Note
	env      []EnvVar
	clusters []string
	names    map[string]string // MM2 alias -> kmirror alias
	// checkpointsOnly are the flows that emitted checkpoints without
	// syncing group offsets.
	checkpointsOnly []string
}

// get returns the value of key and marks it used.
func (c *converter) get(key string) (string, bool) {
	p, ok := c.props[key]
	if ok {
		c.used[key] = true
	}
	return p.Value, ok
}

func (c *converter) note(key, format string, args ...any) {
	c.notes = append(c.notes, Note{Property: key, Line: c.props[key].Line, Reason: fmt.Sprintf(format, args...)})
}

// flowGet returns the value of a MirrorMaker property for flow src->dst:
// the flow's own, else the top-level one; key names the property that
// was used.
func (c *converter) flowGet(src, dst, name string) (value, key string, ok bool) {
	if v, ok := c.get(src + "->" + dst + "." + name); ok {
		c.get(name) // consulted, and overridden for this flow
		return v, src + "->" + dst + "." + name, true
	}
	if v, ok := c.get(name); ok {
		return v, name, true
	}
	return "", "", false
}

// clusterGet returns a client property of cluster alias: its own, else
// the top-level one, which MirrorMaker 2 applies to every cluster.
func (c *converter) clusterGet(alias, name string) (string, string, bool) {
	if v, ok := c.get(alias + "." + name); ok {
		return v, alias + "." + name, true
	}
	if v, ok := c.get(name); ok {
		return v, name, true
	}
	return "", "", false
}

func (c *converter) convert() (*Result, error) {
	list, ok := c.get("clusters")
	if !ok {
		return nil, fmt.Errorf("no \"clusters\" property; expected a list of cluster aliases such as clusters = A, B")
	}
	c.clusters = splitList(list)
	if len(c.clusters) == 0 {
		return nil, fmt.Errorf("\"clusters\" is empty; expected a list of cluster aliases such as clusters = A, B")
	}
	c.names = map[string]string{}
	seen := map[string]bool{}
	for _, a := range c.clusters {
		name := kmirrorAlias(a)
		for base, i := name, 2; seen[name]; i++ {
			name = fmt.Sprintf("%s-%d", base, i)
		}
		seen[name] = true
		c.names[a] = name
		if name != a {
			c.note("clusters", "alias %q is written %q: kmirror aliases are 1 to 64 letters, digits, _ or -; the topic prefix keeps %q", a, name, a)
		}
	}

	clusters := mapping()
	for _, a := range c.clusters {
		cl, err := c.cluster(a)
		if err != nil {
			return nil, err
		}
		add(clusters, c.names[a], cl)
	}
	flows := &yaml.Node{Kind: yaml.SequenceNode}
	for _, src := range c.clusters {
		for _, dst := range c.clusters {
			if src == dst {
				continue
			}
			v, key, ok := c.get2(src+"->"+dst+".enabled", src+"->"+dst+".enable")
			if !ok {
				continue
			}
			enabled, valid := parseBool(v)
			if !valid {
				c.note(key, "%q is not true or false; MirrorMaker 2 reads it as false, so the flow is left out (a .properties value has no trailing comments)", v)
			}
			if !enabled {
				continue
			}
			flows.Content = append(flows.Content, c.flow(src, dst))
		}
	}
	if len(flows.Content) == 0 {
		return nil, fmt.Errorf("no replication flow is enabled; expected a line such as %s->%s.enabled = true", c.clusters[0], c.clusters[min(1, len(c.clusters)-1)])
	}
	if len(c.checkpointsOnly) > 0 {
		c.notes = append(c.notes, Note{Property: "sync.group.offsets.enabled",
			Reason: fmt.Sprintf("false (MirrorMaker 2's default) in %s: MirrorMaker 2 only emitted checkpoints there; kmirror's sync_group_offsets (on by default) both checkpoints and commits the translated offsets to the target's groups, which is what a consumer moving to the target needs. Set sync_group_offsets: false to leave the target's groups alone (and write no checkpoints)",
				strings.Join(c.checkpointsOnly, ", "))})
	}
	root := mapping()
	add(root, "clusters", clusters)
	add(root, "flows", flows)
	c.leftOver()

	var buf bytes.Buffer
	buf.WriteString("# Converted from a MirrorMaker 2 configuration by kmirror import-mm2.\n")
	buf.WriteString("# Check it with: kmirror check --config <this file>\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("writing YAML: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("writing YAML: %w", err)
	}
	slices.SortStableFunc(c.notes, func(a, b Note) int { return a.Line - b.Line })
	return &Result{YAML: buf.Bytes(), Env: c.env, Notes: c.notes}, nil
}

// get2 is get of the first of two keys that is set.
func (c *converter) get2(a, b string) (string, string, bool) {
	if v, ok := c.get(a); ok {
		return v, a, true
	}
	if v, ok := c.get(b); ok {
		return v, b, true
	}
	return "", "", false
}

var aliasBadChars = regexp.MustCompile(`[^A-Za-z0-9_-]`)

func kmirrorAlias(a string) string {
	s := aliasBadChars.ReplaceAllString(a, "-")
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}

// envName is the environment variable name for what of cluster alias.
func envName(alias, what string) string {
	s := strings.ToUpper(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(alias, "_"))
	if s != "" && s[0] >= '0' && s[0] <= '9' {
		s = "C_" + s
	}
	return s + "_" + what
}

func (c *converter) cluster(a string) (*yaml.Node, error) {
	n := mapping()
	bs, ok := c.get(a + ".bootstrap.servers")
	if !ok {
		return nil, fmt.Errorf("cluster %q has no %s.bootstrap.servers", a, a)
	}
	add(n, "bootstrap_servers", flowList(splitList(bs)))
	if v, _, ok := c.clusterGet(a, "client.id"); ok && v != "" {
		add(n, "client_id", str(v))
	}
	proto, protoKey, _ := c.clusterGet(a, "security.protocol")
	proto = strings.ToUpper(strings.TrimSpace(proto))
	switch proto {
	case "", "PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT":
	default:
		c.note(protoKey, "unknown security.protocol %q; the cluster is written without TLS or SASL", proto)
	}
	if proto == "SSL" || proto == "SASL_SSL" {
		add(n, "tls", c.tls(a))
	}
	if proto == "SASL_SSL" || proto == "SASL_PLAINTEXT" {
		if s := c.sasl(a); s != nil {
			add(n, "sasl", s)
			if proto == "SASL_PLAINTEXT" && scalarOf(s, "mechanism") == "PLAIN" {
				add(n, "allow_plaintext_sasl", boolean(true))
				c.note(protoKey, "SASL PLAIN without TLS sends the password in clear; kmirror refuses it unless allow_plaintext_sasl: true, which is written so that the configuration does what MirrorMaker 2 did")
			}
		}
	}
	return n, nil
}

// tls maps the ssl.* properties of cluster a.
func (c *converter) tls(a string) *yaml.Node {
	n := mapping()
	if v, key, ok := c.clusterGet(a, "ssl.truststore.location"); ok && v != "" {
		env := envName(a, "CA_FILE")
		add(n, "ca_file", str("${"+env+":-}"))
		typ, _, _ := c.clusterGet(a, "ssl.truststore.type")
		c.env = append(c.env, EnvVar{Name: env, What: fmt.Sprintf("PEM file of the CA certificates of cluster %q, from %s", a, v)})
		c.note(key, "kmirror reads PEM files, not %s key stores: convert it with `%s` and set %s to the PEM file",
			storeType(typ, v), pemCommand(typ, v, "ca.pem", false), env)
		c.get(a + ".ssl.truststore.password")
		c.get("ssl.truststore.password")
		c.get(a + ".ssl.truststore.type")
		c.get("ssl.truststore.type")
	}
	if v, key, ok := c.clusterGet(a, "ssl.keystore.location"); ok && v != "" {
		certEnv, keyEnv := envName(a, "CERT_FILE"), envName(a, "KEY_FILE")
		add(n, "cert_file", str("${"+certEnv+":-}"))
		add(n, "key_file", str("${"+keyEnv+":-}"))
		typ, _, _ := c.clusterGet(a, "ssl.keystore.type")
		c.env = append(c.env,
			EnvVar{Name: certEnv, What: fmt.Sprintf("PEM client certificate of cluster %q, from %s", a, v)},
			EnvVar{Name: keyEnv, What: fmt.Sprintf("PEM private key (unencrypted) of cluster %q, from %s", a, v)})
		c.note(key, "kmirror reads PEM files, not %s key stores: convert it with `%s` and set %s and %s to the certificate and the key",
			storeType(typ, v), pemCommand(typ, v, "client.pem", true), certEnv, keyEnv)
		for _, k := range []string{"ssl.keystore.password", "ssl.key.password", "ssl.keystore.type"} {
			c.get(a + "." + k)
			c.get(k)
		}
	}
	if v, key, ok := c.clusterGet(a, "ssl.endpoint.identification.algorithm"); ok && strings.TrimSpace(v) == "" {
		c.note(key, "empty: MirrorMaker 2 did not check the brokers' host names; kmirror always does (set tls.server_name to the name in the certificates, or tls.insecure_skip_verify: true for tests only)")
	}
	for _, k := range []string{"ssl.enabled.protocols", "ssl.protocol", "ssl.cipher.suites"} {
		if _, key, ok := c.clusterGet(a, k); ok {
			c.note(key, "kmirror uses Go's TLS defaults (TLS 1.2 and 1.3, secure cipher suites)")
		}
	}
	return n
}

func storeType(typ, location string) string {
	t := strings.ToUpper(strings.TrimSpace(typ))
	if t == "" {
		if l := strings.ToLower(location); strings.HasSuffix(l, ".p12") || strings.HasSuffix(l, ".pfx") {
			return "PKCS12"
		}
		return "JKS"
	}
	return t
}

func pemCommand(typ, location, out string, key bool) string {
	if storeType(typ, location) == "PEM" {
		return "cp " + location + " " + out
	}
	p12 := location
	prefix := ""
	if storeType(typ, location) == "JKS" {
		p12 = strings.TrimSuffix(location, ".jks") + ".p12"
		prefix = fmt.Sprintf("keytool -importkeystore -srckeystore %s -srcstoretype JKS -destkeystore %s -deststoretype PKCS12 && ", location, p12)
	}
	if key {
		return prefix + fmt.Sprintf("openssl pkcs12 -in %s -clcerts -nokeys -out %s && openssl pkcs12 -in %s -nocerts -nodes -out client-key.pem", p12, out, p12)
	}
	return prefix + fmt.Sprintf("openssl pkcs12 -in %s -nokeys -out %s", p12, out)
}

var jaasOptionRE = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s;]+)`)

// jaas parses the login module and options of a sasl.jaas.config value.
func jaas(v string) (module string, opts map[string]string) {
	v = strings.TrimSpace(v)
	fields := strings.Fields(v)
	if len(fields) > 0 {
		module = fields[0]
	}
	opts = map[string]string{}
	for _, m := range jaasOptionRE.FindAllStringSubmatch(v, -1) {
		val := m[2]
		if strings.HasPrefix(val, `"`) {
			val = strings.NewReplacer(`\"`, `"`, `\\`, `\`).Replace(val[1 : len(val)-1])
		}
		opts[m[1]] = val
	}
	return module, opts
}

// sasl maps the sasl.* properties of cluster a; nil when nothing maps.
func (c *converter) sasl(a string) *yaml.Node {
	mech, mechKey, _ := c.clusterGet(a, "sasl.mechanism")
	mech = strings.ToUpper(strings.TrimSpace(mech))
	if mech == "" {
		mech = "GSSAPI" // Kafka's default
	}
	jaasValue, jaasKey, hasJaas := c.clusterGet(a, "sasl.jaas.config")
	module, opts := jaas(jaasValue)
	n := mapping()
	switch mech {
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		if !hasJaas || opts["username"] == "" {
			c.note(firstKey(jaasKey, mechKey), "no username and password found in sasl.jaas.config (expected PlainLoginModule or ScramLoginModule with username= and password=); the cluster is written without sasl")
			return nil
		}
		env := envName(a, "SASL_PASSWORD")
		add(n, "mechanism", str(mech))
		add(n, "username", str(opts["username"]))
		add(n, "password", str("${"+env+"}"))
		c.env = append(c.env, EnvVar{Name: env, What: fmt.Sprintf("password of SASL user %q on cluster %q", opts["username"], a)})
		if !strings.HasSuffix(module, "PlainLoginModule") && !strings.HasSuffix(module, "ScramLoginModule") {
			c.note(jaasKey, "login module %s: kmirror takes the username and password from it", module)
		}
	case "AWS_MSK_IAM":
		add(n, "mechanism", str(mech))
		if p := opts["awsProfileName"]; p != "" {
			c.note(jaasKey, "awsProfileName=%s: kmirror uses the standard AWS credential chain; set AWS_PROFILE=%s", p, p)
		}
		if r := opts["awsRoleArn"]; r != "" {
			c.note(jaasKey, "awsRoleArn: kmirror uses the standard AWS credential chain; assume the role %s there (AWS_ROLE_ARN with web identity, or a profile with role_arn)", r)
		}
		c.get(a + ".sasl.client.callback.handler.class")
		c.get("sasl.client.callback.handler.class")
	case "OAUTHBEARER":
		ep, _, _ := c.clusterGet(a, "sasl.oauthbearer.token.endpoint.url")
		if ep == "" || opts["clientId"] == "" {
			c.note(firstKey(jaasKey, mechKey), "OAUTHBEARER without sasl.oauthbearer.token.endpoint.url and a clientId in sasl.jaas.config cannot be mapped; set sasl.token_endpoint or sasl.token_file by hand (docs/oauth-msk.md); the cluster is written without sasl")
			return nil
		}
		env := envName(a, "OAUTH_CLIENT_SECRET")
		add(n, "mechanism", str(mech))
		add(n, "token_endpoint", str(ep))
		add(n, "client_id", str(opts["clientId"]))
		add(n, "client_secret", str("${"+env+"}"))
		if s := opts["scope"]; s != "" {
			add(n, "scope", str(s))
		}
		c.env = append(c.env, EnvVar{Name: env, What: fmt.Sprintf("OAuth client secret of client %q on cluster %q", opts["clientId"], a)})
		c.get(a + ".sasl.login.callback.handler.class")
		c.get("sasl.login.callback.handler.class")
	default:
		c.note(firstKey(mechKey, jaasKey), "SASL mechanism %s is not supported by kmirror (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER, AWS_MSK_IAM); the cluster is written without sasl", mech)
		return nil
	}
	return n
}

func firstKey(keys ...string) string {
	for _, k := range keys {
		if k != "" {
			return k
		}
	}
	return "sasl.mechanism"
}

// flow maps flow src->dst.
func (c *converter) flow(src, dst string) *yaml.Node {
	n := mapping()
	add(n, "source", str(c.names[src]))
	add(n, "target", str(c.names[dst]))

	if v, _, ok := c.flowGet(src, dst, "topics"); ok {
		if l := splitList(v); !slices.Equal(l, []string{".*"}) && len(l) > 0 {
			add(n, "topics", flowList(l))
		}
		c.commentWarning(src, dst, "topics", v)
	}
	exclude := mm2TopicsExclude
	if v, _, ok := c.flowGet(src, dst, "topics.exclude"); ok {
		exclude = splitList(v)
		c.commentWarning(src, dst, "topics.exclude", v)
	} else if v, _, ok := c.flowGet(src, dst, "topics.blacklist"); ok {
		exclude = splitList(v)
		c.commentWarning(src, dst, "topics.blacklist", v)
	}
	if len(exclude) > 0 {
		add(n, "topics_exclude", flowList(exclude))
	}

	policy, policyKey, _ := c.flowGet(src, dst, "replication.policy.class")
	sep, _, hasSep := c.flowGet(src, dst, "replication.policy.separator")
	if !hasSep {
		sep = "."
	}
	switch {
	case policy == "" || strings.HasSuffix(policy, ".DefaultReplicationPolicy") || policy == "DefaultReplicationPolicy":
		if prefix := src + sep; prefix != c.names[src]+"." {
			add(n, "topic_prefix", str(prefix))
		}
	case strings.HasSuffix(policy, ".IdentityReplicationPolicy") || policy == "IdentityReplicationPolicy":
		add(n, "topic_naming", str("identity"))
	default:
		c.note(policyKey, "custom replication policy %s: kmirror names target topics with a prefix (topic_prefix) or the same name (topic_naming: identity); the flow is written with the default prefix %q", policy, src+sep)
		if prefix := src + sep; prefix != c.names[src]+"." {
			add(n, "topic_prefix", str(prefix))
		}
	}

	if v, key, ok := c.flowGet(src, dst, "replication.factor"); ok {
		if rf, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && rf >= -1 && rf <= 32767 {
			add(n, "replication_factor", integer(rf))
		} else {
			c.note(key, "%q is not a replication factor; left out (the target's default is used)", v)
		}
	}
	if v, key, ok := c.flowGet(src, dst, "refresh.topics.interval.seconds"); ok {
		c.interval(n, "topic_refresh_interval", key, v)
	}
	if v, key, ok := c.flowGet(src, dst, "refresh.topics.enabled"); ok {
		if b, _ := parseBool(v); !b {
			c.note(key, "kmirror always looks for new topics, every topic_refresh_interval")
		}
	}

	c.topicConfigs(n, src, dst)

	acls := true // MirrorMaker 2's default
	if v, _, ok := c.flowGet(src, dst, "sync.topic.acls.enabled"); ok {
		acls, _ = parseBool(v)
	}
	if acls {
		add(n, "acls", str("safe"))
	}

	// Groups.
	if v, _, ok := c.flowGet(src, dst, "groups"); ok {
		if l := splitList(v); !slices.Equal(l, []string{".*"}) && len(l) > 0 {
			add(n, "groups", flowList(l))
		}
		c.commentWarning(src, dst, "groups", v)
	}
	if v, _, ok := c.flowGet(src, dst, "groups.exclude"); ok {
		if l := splitList(v); !slices.Equal(l, mm2GroupsExclude) {
			add(n, "groups_exclude", flowList(l))
		}
	} else if v, _, ok := c.flowGet(src, dst, "groups.blacklist"); ok {
		if l := splitList(v); !slices.Equal(l, mm2GroupsExclude) {
			add(n, "groups_exclude", flowList(l))
		}
	}
	checkpoints, syncOffsets := true, false // MirrorMaker 2's defaults
	if v, _, ok := c.flowGet(src, dst, "emit.checkpoints.enabled"); ok {
		checkpoints, _ = parseBool(v)
	}
	if v, _, ok := c.get2(src+"->"+dst+".sync.group.offsets.enabled", "sync.group.offsets.enabled"); ok {
		syncOffsets, _ = parseBool(v)
	} else if v, _, ok := c.flowGet(src, dst, "sync.group.offsets"); ok {
		syncOffsets, _ = parseBool(v)
	}
	switch {
	case !checkpoints && !syncOffsets:
		add(n, "sync_group_offsets", boolean(false))
	case checkpoints && !syncOffsets:
		c.checkpointsOnly = append(c.checkpointsOnly, src+"->"+dst)
	}
	if v, key, ok := c.flowGet(src, dst, "sync.group.offsets.interval.seconds"); ok {
		c.interval(n, "sync_interval", key, v)
		if _, k, ok := c.flowGet(src, dst, "emit.checkpoints.interval.seconds"); ok {
			c.note(k, "kmirror checkpoints and syncs offsets together, every sync_interval (taken from sync.group.offsets.interval.seconds)")
		}
	} else if v, key, ok := c.flowGet(src, dst, "emit.checkpoints.interval.seconds"); ok {
		c.interval(n, "sync_interval", key, v)
	}

	// Heartbeats. MirrorMaker 2's heartbeat connector writes them to the
	// target, as kmirror does by default (heartbeat_location: target):
	// nothing to map for their place.
	hb := true
	if v, _, ok := c.flowGet(src, dst, "emit.heartbeats.enabled"); ok {
		hb, _ = parseBool(v)
	} else if v, _, ok := c.flowGet(src, dst, "emit.heartbeats"); ok {
		hb, _ = parseBool(v)
	}
	if !hb {
		add(n, "heartbeat_interval", str("off"))
	} else if v, key, ok := c.flowGet(src, dst, "emit.heartbeats.interval.seconds"); ok {
		c.interval(n, "heartbeat_interval", key, v)
	}

	// Clients.
	producer, consumer := mapping(), mapping()
	if v, key, ok := c.get2(dst+".producer.compression.type", src+"->"+dst+".producer.compression.type"); ok {
		switch v = strings.ToLower(strings.TrimSpace(v)); v {
		case "none", "gzip", "snappy", "lz4", "zstd":
			add(producer, "compression", str(v))
		default:
			c.note(key, "unknown compression %q; kmirror's default lz4 is used", v)
		}
	}
	if v, key, ok := c.get2(dst+".producer.acks", src+"->"+dst+".producer.acks"); ok {
		switch strings.TrimSpace(v) {
		case "all", "-1":
			add(producer, "acks", str("all"))
		case "1":
			add(producer, "acks", str("leader"))
		default:
			c.note(key, "acks=%s is not offered by kmirror (all or leader); all is used", v)
		}
	}
	if v, key, ok := c.get2(src+".consumer.isolation.level", src+"->"+dst+".consumer.isolation.level"); ok {
		switch v = strings.ToLower(strings.TrimSpace(v)); v {
		case "read_committed", "read_uncommitted":
			add(consumer, "isolation_level", str(v))
		default:
			c.note(key, "unknown isolation level %q; kmirror's default is used", v)
		}
	}
	if len(producer.Content) > 0 {
		add(n, "producer", producer)
	}
	if len(consumer.Content) > 0 {
		add(n, "consumer", consumer)
	}
	c.get(src + "->" + dst + ".enabled")
	return n
}

// topicConfigs maps the topic config sync of flow src->dst.
func (c *converter) topicConfigs(n *yaml.Node, src, dst string) {
	if v, key, ok := c.flowGet(src, dst, "sync.topic.configs.enabled"); ok {
		if b, _ := parseBool(v); !b {
			add(n, "topic_config_exclude", flowList([]string{".*"}))
			c.note(key, "false: written as topic_config_exclude: [\".*\"], which copies no topic config (the target topics are still created with the source's partition count)")
			if _, k, ok := c.flowGet(src, dst, "config.properties.exclude"); ok {
				c.note(k, "not used: sync.topic.configs.enabled is false")
			}
			return
		}
	}
	if v, _, ok := c.flowGet(src, dst, "config.properties.exclude"); ok {
		add(n, "topic_config_exclude", flowList(splitList(v)))
	} else if v, _, ok := c.flowGet(src, dst, "config.properties.blacklist"); ok {
		add(n, "topic_config_exclude", flowList(splitList(v)))
	}
}

// commentWarning notes a list value that holds " #": a .properties file
// has no trailing comments, so MirrorMaker 2 read it as part of a regex.
func (c *converter) commentWarning(src, dst, name, v string) {
	if !strings.Contains(v, " #") && !strings.Contains(v, "\t#") {
		return
	}
	key := src + "->" + dst + "." + name
	if _, ok := c.props[key]; !ok {
		key = name
	}
	c.note(key, "%q holds \" #\": a .properties file has no trailing comments, so MirrorMaker 2 read the comment as part of the regex (it matches no usual topic name); copied as it is, remove the comment", v)
}

// interval writes key yamlKey as a duration of seconds v, within kmirror's
// range 100ms..10m.
func (c *converter) interval(n *yaml.Node, yamlKey, key, v string) {
	secs, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || secs < 0 {
		c.note(key, "%q is not a number of seconds; left out", v)
		return
	}
	if secs == 0 {
		c.note(key, "0 seconds: kmirror's shortest %s is 100ms, used instead", yamlKey)
		add(n, yamlKey, str("100ms"))
		return
	}
	d := time.Duration(secs) * time.Second
	if d > 10*time.Minute {
		c.note(key, "%ds is past kmirror's longest %s (10m); 10m is used", secs, yamlKey)
		d = 10 * time.Minute
	}
	add(n, yamlKey, str(shortDuration(d)))
}

func shortDuration(d time.Duration) string {
	if d%time.Minute == 0 {
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}

// leftOver notes every property that was not used.
func (c *converter) leftOver() {
	for _, k := range c.order {
		if c.used[k] {
			continue
		}
		c.notes = append(c.notes, Note{Property: k, Line: c.props[k].Line, Reason: c.reason(k)})
	}
}

// reason tells why property k is not mapped.
func (c *converter) reason(k string) string {
	name := k
	if i := strings.Index(k, "->"); i >= 0 {
		if j := strings.Index(k[i:], "."); j >= 0 {
			name = k[i+j+1:]
		}
		src, dst, _ := strings.Cut(k[:i+strings.Index(k[i:], ".")], "->")
		if !slices.Contains(c.clusters, src) || !slices.Contains(c.clusters, dst) {
			return "the flow names a cluster not listed in \"clusters\"; MirrorMaker 2 ignores it"
		}
	} else {
		for _, a := range c.clusters {
			if strings.HasPrefix(k, a+".") {
				name = strings.TrimPrefix(k, a+".")
				break
			}
		}
	}
	if r, ok := reasons[name]; ok {
		return r
	}
	switch {
	case strings.HasPrefix(name, "producer.") || strings.HasPrefix(name, "producer.override."):
		return "kmirror tunes its writes with flows[].producer (compression, linger, batch_max_bytes, max_buffered_bytes, acks)"
	case strings.HasPrefix(name, "consumer.") || strings.HasPrefix(name, "source.consumer."):
		return "kmirror tunes its reads with flows[].consumer (fetch_max_bytes, fetch_max_partition_bytes, isolation_level)"
	case strings.HasPrefix(name, "admin.") || strings.HasPrefix(name, "source.admin.") || strings.HasPrefix(name, "target.admin."):
		return "kmirror's admin requests use the cluster's own settings"
	case strings.HasSuffix(name, ".replication.factor") || strings.HasPrefix(name, "offset.storage.") ||
		strings.HasPrefix(name, "config.storage.") || strings.HasPrefix(name, "status.storage."):
		return "MirrorMaker 2 and Kafka Connect internal topic: kmirror keeps its state in __kmirror.<flow>.* topics on the target, created with the flow's replication_factor"
	case strings.HasPrefix(name, "ssl.") || strings.HasPrefix(name, "sasl."):
		return "not needed by kmirror's TLS and SASL settings (clusters.<alias>.tls, sasl)"
	case strings.HasPrefix(name, "key.converter") || strings.HasPrefix(name, "value.converter") || strings.HasPrefix(name, "header.converter"):
		return "kmirror copies keys, values and headers as bytes, with no converter"
	case strings.HasPrefix(name, "metric") || strings.HasPrefix(name, "metrics."):
		return "kmirror serves Prometheus metrics on http.listen (/metrics)"
	}
	return "not a MirrorMaker 2 property kmirror maps; check whether the configuration needs an equivalent"
}

var reasons = map[string]string{
	"tasks.max":                             "kmirror sizes itself: one process copies every partition of its flows; run more processes for more flows (see docs/ownership.md)",
	"exactly.once.source.support":           "kmirror writes idempotently and resumes from the progress it stores on the target, writing no record twice (docs/guarantees.md)",
	"dedicated.mode.enable.internal.rest":   "kmirror has no Connect REST API; its admin API listens on http.listen",
	"listeners":                             "kmirror has no Connect REST API; its admin API listens on http.listen",
	"rest.advertised.host.name":             "kmirror has no Connect REST API; its admin API listens on http.listen",
	"rest.port":                             "kmirror has no Connect REST API; its admin API listens on http.listen",
	"group.id":                              "Kafka Connect worker group: kmirror coordinates its processes through an ownership group per flow on the target",
	"offset-syncs.topic.location":           "kmirror keeps the offset map with its progress on the target",
	"offset.lag.max":                        "kmirror translates committed offsets exactly with its offset map (offset_map_retention, offset_map_max_runs)",
	"refresh.groups.enabled":                "kmirror lists the groups to sync every sync_interval",
	"refresh.groups.interval.seconds":       "kmirror lists the groups to sync every sync_interval",
	"sync.topic.configs.interval.seconds":   "kmirror brings topic configs in step every topic_refresh_interval",
	"sync.topic.acls.interval.seconds":      "kmirror syncs ACLs every topic_refresh_interval",
	"emit.checkpoints.interval.seconds":     "kmirror checkpoints and syncs offsets together, every sync_interval",
	"replication.policy.separator":          "used for the topic prefix of the flows",
	"replication.policy.class":              "used for the topic naming of the flows",
	"heartbeats.topic.replication.factor":   "kmirror creates heartbeat_topic on the target (heartbeat_location: target, as MirrorMaker 2) with the cluster's default replication factor",
	"checkpoints.topic.replication.factor":  "kmirror keeps its checkpoints in __kmirror.<flow>.checkpoints on the target, created with the flow's replication_factor",
	"offset-syncs.topic.replication.factor": "kmirror keeps its offset map in __kmirror.<flow>.progress on the target, created with the flow's replication_factor",
	"topic.filter.class":                    "custom filter classes cannot be mapped; use topics / topics_exclude regexes",
	"group.filter.class":                    "custom filter classes cannot be mapped; use groups / groups_exclude regexes",
	"config.property.filter.class":          "custom filter classes cannot be mapped; use topic_config_exclude",
	"emit.offset-syncs.enabled":             "kmirror always keeps its offset map",
	"sync.group.offsets.enabled":            "used for sync_group_offsets",
	"emit.checkpoints.enabled":              "used for sync_group_offsets",
	"replication.factor":                    "used for the flows' replication_factor",
	"clusters":                              "used",
	"bootstrap.servers":                     "a cluster's bootstrap servers are <alias>.bootstrap.servers",
	"security.protocol":                     "used for the clusters",
	"consumer.poll.timeout.ms":              "kmirror's fetches wait as the consumer settings say",
	"admin.timeout.ms":                      "kmirror's requests are bounded by clusters.<alias>.request_timeout",
	"offset.flush.interval.ms":              "kmirror stores its progress every progress_interval (default 200ms)",
	"offset.flush.timeout.ms":               "kmirror stores its progress every progress_interval (default 200ms)",
	"offset.storage.topic":                  "Kafka Connect internal topic: kmirror keeps its progress in __kmirror.<flow>.progress on the target",
	"config.storage.topic":                  "Kafka Connect internal topic: kmirror needs none",
	"status.storage.topic":                  "Kafka Connect internal topic: kmirror keeps each flow's status in __kmirror.<flow>.status on the target",
	"topics.blacklist":                      "legacy name of topics.exclude, which is set and wins",
	"groups.blacklist":                      "legacy name of groups.exclude, which is set and wins",
	"heartbeats.topic":                      "MirrorMaker 2 writes heartbeats to \"heartbeats\" on the target, as kmirror does (heartbeat_topic, heartbeat_location: target)",
}

// parseBool reads a MirrorMaker boolean; valid is false for anything but
// true or false (which MirrorMaker reads as false).
func parseBool(v string) (value, valid bool) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}

// splitList splits a MirrorMaker list: comma-separated, blanks trimmed,
// empty items dropped.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func mapping() *yaml.Node { return &yaml.Node{Kind: yaml.MappingNode} }

func add(m *yaml.Node, key string, v *yaml.Node) {
	m.Content = append(m.Content, str(key), v)
}

func str(s string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
	return n
}

func integer(i int) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(i)}
}

func boolean(b bool) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(b)}
}

func flowList(items []string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, s := range items {
		n.Content = append(n.Content, str(s))
	}
	return n
}

func scalarOf(m *yaml.Node, key string) string {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1].Value
		}
	}
	return ""
}
