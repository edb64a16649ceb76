package kafka

import (
	"errors"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kmirror/kmirror/internal/config"
)

// Operations and resource types of Kafka ACLs, as kafka-acls.sh and the
// broker's log name them.
const (
	OpRead            = "READ"
	OpWrite           = "WRITE"
	OpCreate          = "CREATE"
	OpDescribe        = "DESCRIBE"
	OpDescribeConfigs = "DESCRIBE_CONFIGS"
	OpAlter           = "ALTER"
	OpIdempotentWrite = "IDEMPOTENT_WRITE"
	OpAlterConfigs    = "ALTER_CONFIGS"
	OpDelete          = "DELETE"

	ResTopic           = "topic"
	ResGroup           = "group"
	ResCluster         = "cluster"
	ResTransactionalID = "transactional-id"
)

// Access names who kmirror is on a cluster, for errors about missing ACLs.
type Access struct {
	Cluster string // the cluster's alias
	// Principal is the principal the broker sees, as its ACLs name it
	// (User:kmirror), or a description of it when only the broker knows
	// it (the subject of a client certificate); "" if unknown.
	Principal string
}

// AccessOf returns the Access of cluster c.
func AccessOf(c *config.Cluster) Access {
	return Access{Cluster: c.Alias, Principal: principal(c)}
}

// principal is the principal the brokers of c see, as far as the
// configuration tells.
func principal(c *config.Cluster) string {
	switch {
	case c.SASL != nil && c.SASL.Username != "":
		return "User:" + c.SASL.Username
	case c.SASL != nil && c.SASL.OAuth != nil && c.SASL.OAuth.ClientID != "":
		return fmt.Sprintf("the token's subject (client_id %s)", c.SASL.OAuth.ClientID)
	case c.SASL != nil:
		return "the " + c.SASL.Mechanism + " identity"
	case c.TLS != nil && c.TLS.Enabled && c.TLS.CertFile != "":
		return "the subject of tls.cert_file"
	case c.TLS != nil && c.TLS.Enabled:
		return "User:ANONYMOUS (TLS without a client certificate)"
	}
	return "User:ANONYMOUS"
}

// IsDenied reports whether err is a request refused for a missing ACL.
func IsDenied(err error) bool {
	return errors.Is(err, kerr.TopicAuthorizationFailed) || errors.Is(err, kerr.GroupAuthorizationFailed) ||
		errors.Is(err, kerr.ClusterAuthorizationFailed) || errors.Is(err, kerr.TransactionalIDAuthorizationFailed)
}

// DeniedError is a request refused for a missing ACL, naming the
// permission kmirror needed.
type DeniedError struct {
	Access
	Operation    string // OpWrite, ...
	ResourceType string // ResTopic, ResGroup or ResCluster
	Resource     string // the topic or group; "" for the cluster
	err          error
}

func (e *DeniedError) Error() string {
	res := e.ResourceType
	if e.Resource != "" {
		res = fmt.Sprintf("%s %q", e.ResourceType, e.Resource)
	}
	who, where := "", ""
	if e.Principal != "" {
		who = " (principal " + e.Principal + ")"
	}
	if e.Cluster != "" {
		where = fmt.Sprintf("cluster %q: ", e.Cluster)
	}
	return fmt.Sprintf("%snot authorized: %s on %s%s; grant it, see docs/security.md: %v",
		where, e.Operation, res, who, e.err)
}

func (e *DeniedError) Unwrap() error { return e.err }

// Denied returns err, a failure of a request that needed operation op on
// the resource of type resType named name, as a DeniedError if a missing
// ACL refused it, and err as it is otherwise. The cluster and principal
// are added by Access.Name where they are known.
func Denied(op, resType, name string, err error) error {
	return Access{}.Denied(op, resType, name, err)
}

// Name returns err with a's cluster and principal added to a DeniedError
// in it that has none yet, and err as it is otherwise.
func (a Access) Name(err error) error {
	var d *DeniedError
	if !errors.As(err, &d) || d.Cluster != "" {
		return err
	}
	named := *d
	named.Access = a
	// The errors wrapping d hold its text already: replace it there.
	return &namedError{msg: strings.Replace(err.Error(), d.Error(), named.Error(), 1), denied: &named, err: err}
}

// namedError is an error wrapping a DeniedError, with the denial's text
// naming the cluster and principal.
type namedError struct {
	msg    string
	denied *DeniedError
	err    error
}

func (e *namedError) Error() string { return e.msg }

func (e *namedError) Unwrap() []error { return []error{e.denied, e.err} }

// Denied returns err, a failure of a request on a's cluster that needed
// operation op on the resource of type resType named name, as a
// DeniedError if a missing ACL refused it, and err as it is otherwise.
// A refusal of the cluster resource (IdempotentWrite for producers) is
// named as such whatever op was given.
func (a Access) Denied(op, resType, name string, err error) error {
	var d *DeniedError
	if err == nil || !IsDenied(err) || errors.As(err, &d) {
		return err
	}
	if errors.Is(err, kerr.ClusterAuthorizationFailed) && resType != ResCluster {
		if op == OpWrite {
			op = OpIdempotentWrite
		}
		resType, name = ResCluster, ""
	}
	return &DeniedError{Access: a, Operation: op, ResourceType: resType, Resource: name, err: err}
}
