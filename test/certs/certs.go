// Package certs makes the certificates the real-Kafka tests use for TLS
// and mutual TLS: a certificate authority of the test's own, and server
// and client certificates it signs, written as PEM files that both kmirror
// (Go) and the brokers (Java, with ssl.keystore.type=PEM and
// ssl.truststore.type=PEM) read.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority that signs test certificates.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// PEM is the CA certificate, for trust stores and ca_file.
	PEM []byte
}

// NewCA returns a new self-signed certificate authority named name, valid
// for a day.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"kmirror tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key, PEM: pemBlock("CERTIFICATE", der)}, nil
}

// Leaf is a certificate the CA signed, with its private key, in PEM.
type Leaf struct {
	CertPEM []byte // the certificate followed by the CA's
	KeyPEM  []byte // PKCS #8, unencrypted
}

// Options shape a leaf certificate.
type Options struct {
	// Hosts are the DNS names and IP addresses a server certificate is
	// valid for.
	Hosts []string
	// Client makes a client certificate (extended key usage client auth).
	Client bool
	// NotAfter is when it expires; zero means in a day.
	NotAfter time.Time
}

// Issue signs a certificate for common name cn.
func (ca *CA) Issue(cn string, o Options) (*Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("key of %s: %w", cn, err)
	}
	notAfter := o.NotAfter
	if notAfter.IsZero() {
		notAfter = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"kmirror tests"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if o.Client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	for _, h := range o.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("certificate of %s: %w", cn, err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	chain := append(pemBlock("CERTIFICATE", der), ca.PEM...)
	return &Leaf{CertPEM: chain, KeyPEM: pemBlock("PRIVATE KEY", pkcs8)}, nil
}

// Files are a leaf's PEM files on disk.
type Files struct {
	Cert, Key string
	// Keystore holds the key and then the certificate chain: a broker's
	// ssl.keystore.location with ssl.keystore.type=PEM.
	Keystore string
}

// Write writes the leaf into dir as name.pem, name-key.pem and
// name-keystore.pem, readable by the owner only.
func (l *Leaf) Write(dir, name string) (Files, error) {
	f := Files{
		Cert:     filepath.Join(dir, name+".pem"),
		Key:      filepath.Join(dir, name+"-key.pem"),
		Keystore: filepath.Join(dir, name+"-keystore.pem"),
	}
	for path, data := range map[string][]byte{
		f.Cert:     l.CertPEM,
		f.Key:      l.KeyPEM,
		f.Keystore: append(append([]byte{}, l.KeyPEM...), l.CertPEM...),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return Files{}, fmt.Errorf("writing %s: %w", path, err)
		}
	}
	return f, nil
}

// WriteCA writes the CA certificate into dir as name.pem and returns its
// path: a client's ca_file, a broker's ssl.truststore.location with
// ssl.truststore.type=PEM.
func (ca *CA) WriteCA(dir, name string) (string, error) {
	path := filepath.Join(dir, name+".pem")
	if err := os.WriteFile(path, ca.PEM, 0o600); err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	return path, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(fmt.Sprintf("certs: reading random bytes: %v", err))
	}
	return n
}
