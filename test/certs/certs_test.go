package certs

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
)

// TestMutualTLSHandshake checks that a server and a client certificate of
// one CA complete a mutual TLS handshake, and that a client trusting
// another CA fails it.
func TestMutualTLSHandshake(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA("other CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue("broker", Options{Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.Issue("kmirror", Options{Client: true})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sf, err := srv.Write(dir, "broker")
	if err != nil {
		t.Fatal(err)
	}
	cf, err := cli.Write(dir, "client")
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := tls.LoadX509KeyPair(sf.Cert, sf.Key)
	if err != nil {
		t.Fatal(err)
	}
	clientCert, err := tls.LoadX509KeyPair(cf.Cert, cf.Key)
	if err != nil {
		t.Fatal(err)
	}
	pool := func(pem []byte) *x509.CertPool {
		p := x509.NewCertPool()
		if !p.AppendCertsFromPEM(pem) {
			t.Fatal("CA PEM not parsed")
		}
		return p
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{serverCert}, ClientCAs: pool(ca.PEM), ClientAuth: tls.RequireAndVerifyClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	dial := func(roots *x509.CertPool) error {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{clientCert}})
		if err != nil {
			return err
		}
		defer c.Close()
		return c.Handshake()
	}
	if err := dial(pool(ca.PEM)); err != nil {
		t.Fatalf("handshake with the right CA: %v", err)
	}
	if err := dial(pool(other.PEM)); err == nil {
		t.Fatal("handshake trusting another CA succeeded")
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
}
