package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/metrics"
)

// ClusterError is a failure to use a cluster, classified by Kind, with a
// one-line message that names the cluster and says what to check. It
// never holds a secret: SASL passwords are not part of any error here.
type ClusterError struct {
	Cluster string
	// Kind is the kind label of kmirror_errors_total:
	// metrics.ErrAuthentication, ErrTLS, ErrAuthorization or ErrUnreachable.
	Kind string
	// Reason is the message without the cluster's name and addresses.
	Reason string
	msg    string
	err    error
}

func (e *ClusterError) Error() string { return e.msg }

func (e *ClusterError) Unwrap() error { return e.err }

// errTLSFiles is wrapped by errors reading a cluster's TLS files.
var errTLSFiles = errors.New("reading the TLS files")

// ClassifyError returns the kind of a failure err to use cluster c, and
// one line saying what failed and what to check.
func ClassifyError(c *config.Cluster, err error) (kind, reason string) {
	var (
		unknownCA   x509.UnknownAuthorityError
		invalid     x509.CertificateInvalidError
		hostname    x509.HostnameError
		verify      *tls.CertificateVerificationError
		header      tls.RecordHeaderError
		alert       tls.AlertError
		op          *net.OpError
		firstReadEO *kgo.ErrFirstReadEOF
		creds       credentialsError
	)
	msg := err.Error()
	switch {
	case errors.Is(err, kerr.SaslAuthenticationFailed), errors.Is(err, kerr.UnsupportedSaslMechanism),
		errors.Is(err, kerr.IllegalSaslState), errors.As(err, &creds):
		return metrics.ErrAuthentication, fmt.Sprintf("authentication failed (%s): %s", saslName(c), msg)
	case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.GroupAuthorizationFailed),
		errors.Is(err, kerr.ClusterAuthorizationFailed), errors.Is(err, kerr.TransactionalIDAuthorizationFailed):
		return metrics.ErrAuthorization, fmt.Sprintf("not authorized (%s): %s", saslName(c), msg)
	case errors.Is(err, errTLSFiles):
		return metrics.ErrTLS, msg
	case errors.As(err, &unknownCA), errors.As(err, &invalid), errors.As(err, &hostname), errors.As(err, &verify):
		return metrics.ErrTLS, fmt.Sprintf("TLS handshake failed: the broker's certificate is not trusted "+
			"(check tls.ca_file and tls.server_name): %s", msg)
	case errors.As(err, &header), strings.Contains(msg, "is this a plaintext connection speaking to a tls endpoint"):
		return metrics.ErrTLS, fmt.Sprintf("TLS mismatch: the client and the broker's listener disagree on TLS "+
			"(check the tls block and the port): %s", msg)
	case errors.As(err, &alert), errors.As(err, &op) && op.Op == "remote error", strings.Contains(msg, "remote error: tls:"):
		hint := "the broker may require a client certificate: set tls.cert_file and tls.key_file"
		if c.TLS != nil && c.TLS.CertFile != "" {
			hint = "the broker may not trust the client certificate of tls.cert_file"
		}
		return metrics.ErrTLS, fmt.Sprintf("TLS handshake refused by the broker (%s): %s", hint, msg)
	case errors.As(err, &firstReadEO):
		if strings.Contains(msg, "SASL") {
			return metrics.ErrAuthentication, fmt.Sprintf("authentication failed (%s): %s", saslName(c), msg)
		}
		return metrics.ErrTLS, fmt.Sprintf("TLS mismatch: %s", msg)
	}
	return metrics.ErrUnreachable, msg
}

// saslName describes how the client authenticates, without secrets.
func saslName(c *config.Cluster) string {
	if c.SASL == nil {
		if c.TLS != nil && c.TLS.Enabled && c.TLS.CertFile != "" {
			return "TLS client certificate"
		}
		return "no SASL"
	}
	if c.SASL.Username != "" {
		return fmt.Sprintf("SASL %s as user %q", c.SASL.Mechanism, c.SASL.Username)
	}
	return "SASL " + c.SASL.Mechanism
}

// clusterError wraps err, a failure to use cluster c, into a ClusterError.
func clusterError(c *config.Cluster, err error) *ClusterError {
	kind, reason := ClassifyError(c, err)
	seeds := strings.Join(c.BootstrapServers, ",")
	msg := fmt.Sprintf("cluster %q (%s): %s", c.Alias, seeds, reason)
	if kind == metrics.ErrUnreachable {
		msg = fmt.Sprintf("cluster %q (%s) unreachable: %s", c.Alias, seeds, reason)
	}
	return &ClusterError{Cluster: c.Alias, Kind: kind, Reason: reason, msg: msg, err: err}
}
