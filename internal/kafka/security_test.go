package kafka

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/test/certs"
)

func TestClassifyError(t *testing.T) {
	scram := &config.Cluster{Alias: "primary", BootstrapServers: []string{"b:9096"},
		TLS:  &config.TLS{Enabled: true},
		SASL: &config.SASL{Mechanism: "SCRAM-SHA-512", Username: "kmirror", Password: "hunter2"}}
	mtls := &config.Cluster{Alias: "dr", BootstrapServers: []string{"d:9093"}, TLS: &config.TLS{Enabled: true, CertFile: "c.pem", KeyFile: "k.pem"}}
	for _, tc := range []struct {
		name     string
		c        *config.Cluster
		err      error
		kind     string
		contains string
	}{
		{"wrong password", scram, fmt.Errorf("SASL Authentication failed: %w", kerr.SaslAuthenticationFailed), metrics.ErrAuthentication, `authentication failed (SASL SCRAM-SHA-512 as user "kmirror")`},
		{"untrusted CA", scram, fmt.Errorf("unable to dial: %w", x509.UnknownAuthorityError{}), metrics.ErrTLS, "certificate is not trusted"},
		{"no client certificate", scram, &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}, metrics.ErrTLS, "may require a client certificate"},
		{"client certificate refused", mtls, &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}, metrics.ErrTLS, "may not trust the client certificate"},
		{"missing ACL", mtls, kerr.TopicAuthorizationFailed, metrics.ErrAuthorization, "not authorized (TLS client certificate)"},
		{"eof", scram, io.EOF, metrics.ErrUnreachable, "EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kind, reason := ClassifyError(tc.c, tc.err)
			if kind != tc.kind || !strings.Contains(reason, tc.contains) {
				t.Fatalf("ClassifyError = %s, %q; want %s containing %q", kind, reason, tc.kind, tc.contains)
			}
			msg := clusterError(tc.c, tc.err).Error()
			if strings.Contains(msg, "hunter2") || strings.Contains(msg, "\n") || !strings.Contains(msg, `cluster "`+tc.c.Alias+`"`) {
				t.Fatalf("message %q: want one line naming the cluster, without the password", msg)
			}
		})
	}
}

// TestTLSFilesReload checks that a client certificate replaced on disk is
// used for the next connection, and that unchanged files are not read
// again.
func TestTLSFilesReload(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.NewCA("CA")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	issue := func(cn string) certs.Files {
		l, err := ca.Issue(cn, certs.Options{Client: true})
		if err != nil {
			t.Fatal(err)
		}
		f, err := l.Write(dir, "client")
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	f := issue("first")
	files := newTLSFiles(&config.TLS{Enabled: true, CAFile: caFile, CertFile: f.Cert, KeyFile: f.Key})
	leafCN := func() string {
		tc, err := files.config()
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(tc.Certificates[0].Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return c.Subject.CommonName
	}
	if got := leafCN(); got != "first" {
		t.Fatalf("client certificate %q, want first", got)
	}
	first, _ := files.config()
	if again, _ := files.config(); again != first {
		t.Fatal("unchanged files were read again")
	}
	issue("second")
	later := time.Now().Add(time.Second) // the same size may be written within the clock's tick
	for _, p := range []string{f.Cert, f.Key} {
		if err := os.Chtimes(p, later, later); err != nil {
			t.Fatal(err)
		}
	}
	if got := leafCN(); got != "second" {
		t.Fatalf("client certificate %q after rotation, want second", got)
	}
	if err := os.WriteFile(filepath.Join(dir, "client-key.pem"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := files.config(); !errors.Is(err, errTLSFiles) || strings.Contains(err.Error(), "garbage") {
		t.Fatalf("a broken key file: %v", err)
	}
}
