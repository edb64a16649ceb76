package flow

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kmirror/kmirror/internal/config"
)

func TestOwnPrincipal(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "kmirror", OrganizationalUnit: []string{"ops"}, Organization: []string{"Acme"}, Country: []string{"DE"}},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile := filepath.Join(dir, "client.pem")
	// A key block first: the certificate is found after it.
	data := append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("x")}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	if err := os.WriteFile(certFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		c    config.Cluster
		want string
	}{
		{"SCRAM", config.Cluster{SASL: &config.SASL{Mechanism: "SCRAM-SHA-512", Username: "kmirror"}}, "User:kmirror"},
		{"PLAIN over mTLS", config.Cluster{SASL: &config.SASL{Mechanism: "PLAIN", Username: "svc"}, TLS: &config.TLS{Enabled: true, CertFile: certFile}}, "User:svc"},
		{"OAUTHBEARER", config.Cluster{SASL: &config.SASL{Mechanism: "OAUTHBEARER", OAuth: &config.OAuth{ClientID: "id"}}}, ""},
		{"mTLS", config.Cluster{TLS: &config.TLS{Enabled: true, CertFile: certFile}}, "User:CN=kmirror,OU=ops,O=Acme,C=DE"},
		{"unreadable certificate", config.Cluster{TLS: &config.TLS{Enabled: true, CertFile: filepath.Join(dir, "missing.pem")}}, ""},
		{"TLS without a certificate", config.Cluster{TLS: &config.TLS{Enabled: true}}, "User:ANONYMOUS"},
		{"plaintext", config.Cluster{}, "User:ANONYMOUS"},
	}
	for _, tc := range tests {
		if got := ownPrincipal(&tc.c); got != tc.want {
			t.Errorf("%s: ownPrincipal = %q, want %q", tc.name, got, tc.want)
		}
	}
}
