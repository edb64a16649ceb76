package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// adminToken is the token the tests below use; no message may show it.
const adminToken = "s3cret-admin-token-0123456789"

func TestHTTPValues(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"admin.pem", "admin-key.pem"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(dir, "kmirror.yaml")
	for _, tt := range []struct {
		name string
		http string
		want HTTP
	}{
		{
			name: "token and limits",
			http: `
  listen: ":9780"
  tls: {cert_file: admin.pem, key_file: admin-key.pem}
  auth_token: ${KMIRROR_ADMIN_TOKEN}
  read_header_timeout: 1s
  read_timeout: 2s
  write_timeout: 3s
  idle_timeout: 4s
  max_header_bytes: 4096
  max_connections: 10
`,
			want: HTTP{Listen: ":9780", TLS: &HTTPTLS{CertFile: filepath.Join(dir, "admin.pem"), KeyFile: filepath.Join(dir, "admin-key.pem")},
				AuthToken: adminToken, ReadHeaderTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 3 * time.Second,
				IdleTimeout: 4 * time.Second, MaxHeaderBytes: 4096, MaxConnections: 10},
		},
		{
			name: "basic auth, other keys default",
			http: `
  basic_auth: {username: ops, password: "${KMIRROR_ADMIN_PASSWORD}"}
`,
			want: HTTP{Listen: DefaultHTTPListen, BasicAuth: &BasicAuth{Username: "ops", Password: "pw"},
				ReadHeaderTimeout: DefaultHTTPReadHeaderTimeout, ReadTimeout: DefaultHTTPReadTimeout,
				WriteTimeout: DefaultHTTPWriteTimeout, IdleTimeout: DefaultHTTPIdleTimeout,
				MaxHeaderBytes: DefaultHTTPMaxHeaderBytes, MaxConnections: DefaultHTTPMaxConnections},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := envOf(map[string]string{"KMIRROR_ADMIN_TOKEN": adminToken, "KMIRROR_ADMIN_PASSWORD": "pw"})
			cfg, err := Parse(file, []byte(flow+"http:"+tt.http), env)
			if err != nil {
				t.Fatal(err)
			}
			got := cfg.HTTP
			if got.TLS != nil && tt.want.TLS != nil && *got.TLS == *tt.want.TLS {
				got.TLS = tt.want.TLS
			}
			if got.BasicAuth != nil && tt.want.BasicAuth != nil && *got.BasicAuth == *tt.want.BasicAuth {
				got.BasicAuth = tt.want.BasicAuth
			}
			if got != tt.want || got.AuthToken != tt.want.AuthToken {
				t.Errorf("HTTP =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestHTTPErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "admin.pem"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"KMIRROR_ADMIN_TOKEN": adminToken, "SHORT": "abc", "SPACED": "a token with spaces in it"}
	for _, tt := range []struct {
		name string
		http string
		want string
	}{
		{"token unset", "auth_token: ${UNSET_TOKEN}",
			"http.auth_token: environment variable UNSET_TOKEN is not set; expected it to be set, or a default such as ${UNSET_TOKEN:-value}"},
		{"token empty", `auth_token: "${UNSET_TOKEN:-}"`,
			"http.auth_token: too short; expected a token of at least 16 printable characters, such as ${KMIRROR_ADMIN_TOKEN}"},
		{"token short", "auth_token: ${SHORT}",
			"http.auth_token: too short; expected a token of at least 16 printable characters, such as ${KMIRROR_ADMIN_TOKEN}"},
		{"token with spaces", "auth_token: ${SPACED}",
			"http.auth_token: contains a space, control or non-ASCII character; expected a token of at least 16 printable characters, such as ${KMIRROR_ADMIN_TOKEN}"},
		{"token and basic auth", "auth_token: ${KMIRROR_ADMIN_TOKEN}\n  basic_auth: {username: a, password: b}",
			"http.basic_auth: set together with auth_token; expected one of auth_token and basic_auth"},
		{"basic auth without password", "basic_auth: {username: a}",
			"http.basic_auth.password: missing; expected a password, such as ${KMIRROR_ADMIN_PASSWORD}"},
		{"basic auth user with colon", "basic_auth: {username: 'a:b', password: x}",
			`http.basic_auth.username: contains ":"; expected a user name without ":" (HTTP basic authentication)`},
		{"tls without key", "tls: {cert_file: admin.pem}",
			"http.tls.key_file: missing; expected a PEM file"},
		{"tls file missing", "tls: {cert_file: admin.pem, key_file: nokey.pem}",
			fmt.Sprintf("http.tls.key_file: file %q does not exist; expected a readable PEM file", filepath.Join(dir, "nokey.pem"))},
		{"zero timeout", "idle_timeout: 0s",
			"http.idle_timeout: expected a duration between 1ms and 24h, got 0s"},
		{"header limit", "max_header_bytes: 100",
			"http.max_header_bytes: expected an integer from 1024 to 1048576, got 100"},
		{"no connections", "max_connections: 0",
			"http.max_connections: expected an integer from 1 to 100000, got 0"},
		{"unknown key", "token: x",
			"http.token: unknown key; expected one of: auth_token, basic_auth, idle_timeout, listen, max_connections, max_header_bytes, read_header_timeout, read_timeout, tls, write_timeout"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(filepath.Join(dir, "kmirror.yaml"), []byte(flow+"http:\n  "+tt.http+"\n"), envOf(env))
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if _, after, ok := strings.Cut(msg, ": "); !ok || !strings.HasSuffix(after, tt.want) {
				t.Errorf("error:\n%s\nwant it to end with:\n%s", msg, tt.want)
			}
			for _, secret := range env {
				if strings.Contains(msg, secret) {
					t.Errorf("error shows the secret %q: %s", secret, msg)
				}
			}
		})
	}
}

func TestHTTPString(t *testing.T) {
	h := HTTP{Listen: "127.0.0.1:0", AuthToken: adminToken, BasicAuth: &BasicAuth{Username: "ops", Password: "hunter2-basic"}}
	cfg := Config{HTTP: h}
	for _, out := range []string{fmt.Sprint(h), fmt.Sprintf("%v %+v %#v", h, &h, h), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", *h.BasicAuth)} {
		if strings.Contains(out, adminToken) || strings.Contains(out, "hunter2-basic") {
			t.Errorf("secret shown: %s", out)
		}
		if !strings.Contains(out, "<redacted>") {
			t.Errorf("no <redacted> in %s", out)
		}
	}
}
