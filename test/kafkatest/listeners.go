package kafkatest

import (
	"fmt"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Listener is a client listener a cluster opens beside its PLAINTEXT one,
// which the harness keeps for its own clients and for traffic between
// brokers and with the controller.
type Listener struct {
	// Name is the listener's name, e.g. "SASL_SSL" or "MTLS": upper-case
	// letters, digits and underscores, and neither PLAINTEXT nor
	// CONTROLLER.
	Name string

	// Protocol is its security protocol: SSL, SASL_SSL, SASL_PLAINTEXT or
	// PLAINTEXT.
	Protocol string

	// Props are its settings, written with the listener's prefix
	// (listener.name.<name in lower case>.): "ssl.keystore.location",
	// "ssl.client.auth", "sasl.enabled.mechanisms",
	// "scram-sha-512.sasl.jaas.config", ... TLSProps, ScramProps and
	// PlainProps return common ones.
	Props map[string]string
}

var listenerName = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// check reports a listener the harness cannot open.
func (l Listener) check() error {
	if !listenerName.MatchString(l.Name) || l.Name == "PLAINTEXT" || l.Name == "CONTROLLER" {
		return fmt.Errorf("listener name %q: want upper-case letters, digits and _, not PLAINTEXT or CONTROLLER", l.Name)
	}
	switch l.Protocol {
	case "SSL", "SASL_SSL", "SASL_PLAINTEXT", "PLAINTEXT":
		return nil
	}
	return fmt.Errorf("listener %s: protocol %q: want SSL, SASL_SSL, SASL_PLAINTEXT or PLAINTEXT", l.Name, l.Protocol)
}

// addListeners adds ls, listening on the given ports of 127.0.0.1, to the
// server properties p (listeners, advertised.listeners, the protocol map
// and every listener's prefixed settings).
func addListeners(p map[string]string, ls []Listener, ports []int) {
	if len(ls) == 0 {
		return
	}
	listeners := []string{p["listeners"]}
	advertised := []string{p["advertised.listeners"]}
	protocols := []string{p["listener.security.protocol.map"]}
	mechanisms := map[string]bool{}
	for i, l := range ls {
		addr := l.Name + "://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[i]))
		listeners = append(listeners, addr)
		advertised = append(advertised, addr)
		protocols = append(protocols, l.Name+":"+l.Protocol)
		prefix := "listener.name." + strings.ToLower(l.Name) + "."
		for k, v := range l.Props {
			p[prefix+k] = v
		}
		for _, m := range strings.Split(l.Props["sasl.enabled.mechanisms"], ",") {
			if m = strings.TrimSpace(m); m != "" {
				mechanisms[m] = true
			}
		}
	}
	p["listeners"] = strings.Join(listeners, ",")
	p["advertised.listeners"] = strings.Join(advertised, ",")
	p["listener.security.protocol.map"] = strings.Join(protocols, ",")
	if len(mechanisms) > 0 {
		// The broker-wide list must name every mechanism a listener
		// enables, or the broker does not load its login modules.
		var all []string
		for m := range mechanisms {
			all = append(all, m)
		}
		sort.Strings(all)
		if _, set := p["sasl.enabled.mechanisms"]; !set {
			p["sasl.enabled.mechanisms"] = strings.Join(all, ",")
		}
	}
}

// TLSProps returns a listener's TLS settings for PEM files: the broker's
// keystore (its key, then its certificate chain: certs.Files.Keystore),
// and, when clientCA is not empty, a truststore of that CA file with
// client certificates required (mutual TLS).
func TLSProps(keystore, clientCA string) map[string]string {
	p := map[string]string{
		"ssl.keystore.type":     "PEM",
		"ssl.keystore.location": keystore,
	}
	if clientCA != "" {
		p["ssl.truststore.type"] = "PEM"
		p["ssl.truststore.location"] = clientCA
		p["ssl.client.auth"] = "required"
	}
	return p
}

// ScramProps returns the settings that enable SCRAM mechanism (e.g.
// "SCRAM-SHA-512") on a SASL listener. The users and their passwords are
// created when the storage is formatted: see ScramUser.
func ScramProps(mechanism string) map[string]string {
	return map[string]string{
		"sasl.enabled.mechanisms":                        mechanism,
		strings.ToLower(mechanism) + ".sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
	}
}

// ScramUser returns the storage tool's arguments (Options.FormatArgs)
// that create SCRAM credentials for user with password under mechanism.
func ScramUser(mechanism, user, password string) []string {
	return []string{"--add-scram", fmt.Sprintf("%s=[name=%s,password=%s]", mechanism, user, password)}
}

// PlainProps returns the settings that enable SASL PLAIN on a listener
// for the given users and passwords.
func PlainProps(users map[string]string) map[string]string {
	names := make([]string, 0, len(users))
	for u := range users {
		names = append(names, u)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("org.apache.kafka.common.security.plain.PlainLoginModule required")
	for _, u := range names {
		fmt.Fprintf(&b, " user_%s=%q", u, users[u])
	}
	b.WriteString(";")
	return map[string]string{
		"sasl.enabled.mechanisms": "PLAIN",
		"plain.sasl.jaas.config":  b.String(),
	}
}

// authorizerProps turns on KRaft's standard ACL authorizer with the
// harness's own principal, ANONYMOUS on the PLAINTEXT and CONTROLLER
// listeners, as a super user, so the harness and the brokers keep working
// while other principals need ACLs.
func authorizerProps() map[string]string {
	return map[string]string{
		"authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
		"super.users":           "User:ANONYMOUS",
	}
}

// ListenerAddr returns the address, "127.0.0.1:PORT", of node 1's
// listener name (see Options.Listeners). It fails the test if there is no
// such listener.
func (c *Cluster) ListenerAddr(name string) string {
	c.t.Helper()
	port, ok := c.listenerPorts[name]
	if !ok {
		c.t.Fatalf("kafkatest: cluster %q has no listener %q", c.name, name)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// ListenerAddrs returns the addresses of listener name on every broker of
// the cluster, node 1 first.
func (c *Cluster) ListenerAddrs(name string) []string {
	c.t.Helper()
	var out []string
	for _, n := range c.nodes() {
		out = append(out, n.ListenerAddr(name))
	}
	return out
}
