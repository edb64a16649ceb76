package server

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certCheckInterval is how often a handshake may look at the certificate
// files for a change.
const certCheckInterval = time.Second

// certFiles serves the certificate in a pair of PEM files and reads them
// again when they change (size or modification time), so a rotated
// certificate is used from the next handshake on, without a restart. A
// pair that does not load (half written, mismatched) is logged once and
// the previous certificate kept.
type certFiles struct {
	certFile, keyFile string
	logger            *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string // of the files cert was read from
	failed  string // stamp of the last pair that failed to load
	checked time.Time
}

// loadCertFiles reads the pair once, so that a bad pair stops the start.
func loadCertFiles(certFile, keyFile string, logger *slog.Logger) (*certFiles, error) {
	c := &certFiles{certFile: certFile, keyFile: keyFile, logger: logger}
	stamp, err := c.fileStamp()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("http.tls: %w", err)
	}
	c.cert, c.stamp, c.checked = &cert, stamp, time.Now()
	return c, nil
}

func (c *certFiles) fileStamp() (string, error) {
	var stamp string
	for _, f := range []string{c.certFile, c.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", fmt.Errorf("http.tls: %w", err)
		}
		stamp += fmt.Sprintf("%d/%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return stamp, nil
}

// get is tls.Config.GetCertificate.
func (c *certFiles) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); now.Sub(c.checked) >= certCheckInterval {
		c.checked = now
		c.reload()
	}
	return c.cert, nil
}

func (c *certFiles) reload() {
	stamp, err := c.fileStamp()
	if err != nil || stamp == c.stamp || stamp == c.failed {
		return
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		c.failed = stamp
		c.logger.Warn("admin HTTP: the changed certificate files do not load; keeping the previous certificate",
			"cert_file", c.certFile, "key_file", c.keyFile, "err", err)
		return
	}
	c.cert, c.stamp = &cert, stamp
	c.logger.Info("admin HTTP: certificate reloaded", "cert_file", c.certFile)
}
