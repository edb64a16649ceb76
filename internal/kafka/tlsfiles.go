package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/kmirror/kmirror/internal/config"
)

// tlsFiles is the TLS configuration of a cluster, built from its files
// and built again when one of them changes on disk, so that certificates
// rotated by an operator (or cert-manager, Vault, ...) are used for the
// next connection without a restart. Connections already open keep the
// certificate they were made with.
type tlsFiles struct {
	cfg *config.TLS

	mu     sync.Mutex
	stamps []fileStamp // of cfg's files when cur was built
	cur    *tls.Config // nil until built
}

// fileStamp tells whether a file changed: its size and modification time.
type fileStamp struct {
	size int64
	mod  time.Time
}

func newTLSFiles(cfg *config.TLS) *tlsFiles { return &tlsFiles{cfg: cfg} }

// paths returns the files the configuration reads, in a fixed order.
func (f *tlsFiles) paths() []string {
	var out []string
	for _, p := range []string{f.cfg.CAFile, f.cfg.CertFile, f.cfg.KeyFile} {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// config returns the TLS configuration for a new connection: the one
// built last if no file changed since, else a new one read from the
// files. An error names the file and the key, never a file's content.
func (f *tlsFiles) config() (*tls.Config, error) {
	paths := f.paths()
	stamps := make([]fileStamp, len(paths))
	for i, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errTLSFiles, err)
		}
		stamps[i] = fileStamp{size: fi.Size(), mod: fi.ModTime()}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cur != nil && equalStamps(stamps, f.stamps) {
		return f.cur, nil
	}
	tc, err := tlsConfig(f.cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errTLSFiles, err)
	}
	f.cur, f.stamps = tc, stamps
	return tc, nil
}

func equalStamps(a, b []fileStamp) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].size != b[i].size || !a[i].mod.Equal(b[i].mod) {
			return false
		}
	}
	return true
}

// tlsConfig reads the files of t into a TLS configuration.
func tlsConfig(t *config.TLS) (*tls.Config, error) {
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // an explicit, documented opt-in, warned about at start
		ServerName:         t.ServerName,
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file %q: no PEM certificate found", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file %q / key_file %q: %w", t.CertFile, t.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
