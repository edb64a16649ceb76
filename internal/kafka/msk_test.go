package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/metrics"
)

// AWS's documentation example keys.
const (
	exampleAccessKey = "AKIAIOSFODNN7EXAMPLE"
	exampleSecretKey = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
)

// presign signs a GET of https://host/?query with AWS Signature Version 4
// in the query string, as the AWS SDK does, and returns the signature.
func presign(t *testing.T, creds awssdk.Credentials, host, path string, query url.Values, payloadHash, service, region string, at time.Time) string {
	t.Helper()
	u := url.URL{Scheme: "https", Host: host, Path: path, RawQuery: query.Encode()}
	req, err := http.NewRequest(http.MethodGet, u.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	signed, _, err := v4.NewSigner().PresignHTTP(context.Background(), creds, req, payloadHash, service, region, at)
	if err != nil {
		t.Fatal(err)
	}
	su, err := url.Parse(signed)
	if err != nil {
		t.Fatal(err)
	}
	return su.Query().Get("X-Amz-Signature")
}

// TestPresignPublishedVector checks the reference signer the MSK test
// relies on against the example AWS publishes for query-string signing
// ("Authenticating Requests: Using Query Parameters", Amazon S3 API
// reference): GET /test.txt of examplebucket, 2013-05-24, us-east-1.
func TestPresignPublishedVector(t *testing.T) {
	at := time.Date(2013, 5, 24, 0, 0, 0, 0, time.UTC)
	got := presign(t, awssdk.Credentials{AccessKeyID: exampleAccessKey, SecretAccessKey: exampleSecretKey},
		"examplebucket.s3.amazonaws.com", "/test.txt", url.Values{"X-Amz-Expires": {"86400"}},
		"UNSIGNED-PAYLOAD", "s3", "us-east-1", at)
	if want := "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"; got != want {
		t.Fatalf("signature %s, want the published %s", got, want)
	}
}

// TestMSKSignature checks the AWS_MSK_IAM payload kmirror sends for fixed
// credentials and region: the fields Amazon's own client sends, and a
// signature equal to the AWS SDK's SigV4 signature of the same request
// (GET / of the broker host with Action=kafka-cluster:Connect, signed
// header host, empty payload) at the payload's x-amz-date.
func TestMSKSignature(t *testing.T) {
	const emptyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	for _, tt := range []struct {
		name, host, region, token string
	}{
		{name: "long-term keys", host: "b-1.example.c2.kafka.us-east-1.amazonaws.com:9098", region: "us-east-1"},
		{name: "session token", host: "b-2.example.c2.kafka.eu-west-3.amazonaws.com:9098", region: "eu-west-3",
			token: "IQoJb3JpZ2luX2VjEXAMPLE/+=TOKEN"},
		{name: "region from host", host: "b-3.mirror.kafka.ap-southeast-2.amazonaws.com:9098", region: ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			creds := credentials.NewStaticCredentialsProvider(exampleAccessKey, exampleSecretKey, tt.token)
			m := mskFromProvider(creds, tt.region)
			if m.Name() != "AWS_MSK_IAM" {
				t.Fatalf("Name = %q", m.Name())
			}
			before := time.Now().UTC().Truncate(time.Second)
			s, first, err := m.Authenticate(context.Background(), tt.host)
			if err != nil {
				t.Fatal(err)
			}
			after := time.Now().UTC()
			if strings.Contains(string(first), exampleSecretKey) {
				t.Fatalf("payload holds the secret key: %s", first)
			}
			var p map[string]string
			if err := json.Unmarshal(first, &p); err != nil {
				t.Fatalf("payload %s: %v", first, err)
			}
			host := strings.Split(tt.host, ":")[0]
			region := hostRegion(tt.host)
			at, err := time.Parse("20060102T150405Z", p["x-amz-date"])
			if err != nil || at.Before(before) || at.After(after) {
				t.Fatalf("x-amz-date %q (%v) not between %v and %v", p["x-amz-date"], err, before, after)
			}
			want := map[string]string{
				"version":             "2020_10_22",
				"host":                host,
				"user-agent":          "kmirror",
				"action":              "kafka-cluster:Connect",
				"x-amz-algorithm":     "AWS4-HMAC-SHA256",
				"x-amz-credential":    exampleAccessKey + "/" + at.Format("20060102") + "/" + region + "/kafka-cluster/aws4_request",
				"x-amz-date":          at.Format("20060102T150405Z"),
				"x-amz-expires":       "300",
				"x-amz-signedheaders": "host",
			}
			if tt.token != "" {
				want["x-amz-security-token"] = tt.token
			}
			want["x-amz-signature"] = presign(t, awssdk.Credentials{AccessKeyID: exampleAccessKey, SecretAccessKey: exampleSecretKey, SessionToken: tt.token},
				host, "/", url.Values{"Action": {"kafka-cluster:Connect"}, "X-Amz-Expires": {"300"}}, emptyHash, "kafka-cluster", region, at)
			for k, v := range want {
				if p[k] != v {
					t.Errorf("%s = %q, want %q", k, p[k], v)
				}
			}
			if len(p) != len(want) {
				t.Errorf("payload has %d fields, want %d: %s", len(p), len(want), first)
			}
			if done, _, err := s.Challenge([]byte(`{"version":"2020_10_22","request-id":"x"}`)); !done || err != nil {
				t.Errorf("Challenge = %v, %v", done, err)
			}
		})
	}
}

func TestMSKErrors(t *testing.T) {
	creds := credentials.NewStaticCredentialsProvider(exampleAccessKey, exampleSecretKey, "")
	_, _, err := mskFromProvider(creds, "us-west-2").Authenticate(context.Background(), "b-1.x.kafka.us-east-1.amazonaws.com:9098")
	if want := "AWS_MSK_IAM: broker b-1.x.kafka.us-east-1.amazonaws.com:9098 is in region us-east-1, but sasl.region is us-west-2"; err == nil || err.Error() != want {
		t.Errorf("region mismatch: %v, want %q", err, want)
	}
	failing := awssdk.CredentialsProviderFunc(func(context.Context) (awssdk.Credentials, error) {
		return awssdk.Credentials{}, errors.New("no EC2 IMDS role found")
	})
	_, _, err = mskFromProvider(failing, "").Authenticate(context.Background(), "b-1.x.kafka.us-east-1.amazonaws.com:9098")
	if want := "AWS_MSK_IAM: getting AWS credentials: no EC2 IMDS role found"; err == nil || err.Error() != want {
		t.Errorf("no credentials: %v, want %q", err, want)
	}
}

// TestMSKCredentialChain checks that credentials come from the standard
// chain: the environment first, else the shared credentials file.
func TestMSKCredentialChain(t *testing.T) {
	dir := t.TempDir()
	shared := filepath.Join(dir, "credentials")
	if err := os.WriteFile(shared, []byte("[default]\naws_access_key_id = AKIDFROMFILE\naws_secret_access_key = filesecret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", shared)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	for _, k := range []string{"AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_SESSION_TOKEN"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	credentialOf := func() string {
		t.Helper()
		m, err := saslMechanism(&config.SASL{Mechanism: "AWS_MSK_IAM", Region: "us-east-1"})
		if err != nil {
			t.Fatal(err)
		}
		_, first, err := m.Authenticate(context.Background(), "b-1.x.kafka.us-east-1.amazonaws.com:9098")
		if err != nil {
			t.Fatal(err)
		}
		var p map[string]string
		if err := json.Unmarshal(first, &p); err != nil {
			t.Fatal(err)
		}
		return strings.Split(p["x-amz-credential"], "/")[0]
	}
	if got := credentialOf(); got != "AKIDFROMFILE" {
		t.Errorf("shared file: access key %q, want AKIDFROMFILE", got)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
	if got := credentialOf(); got != "AKIDFROMENV" {
		t.Errorf("environment: access key %q, want AKIDFROMENV", got)
	}
}

func TestCredentialsErrorIsAuthentication(t *testing.T) {
	failing := awssdk.CredentialsProviderFunc(func(context.Context) (awssdk.Credentials, error) {
		return awssdk.Credentials{}, errors.New("no EC2 IMDS role found")
	})
	_, _, err := mskFromProvider(failing, "").Authenticate(context.Background(), "b-1.x.kafka.us-east-1.amazonaws.com:9098")
	c := &config.Cluster{Alias: "msk", BootstrapServers: []string{"b-1:9098"}, SASL: &config.SASL{Mechanism: "AWS_MSK_IAM"}}
	kind, reason := ClassifyError(c, fmt.Errorf("dialing: %w", err))
	if kind != metrics.ErrAuthentication || reason != "authentication failed (SASL AWS_MSK_IAM): dialing: AWS_MSK_IAM: getting AWS credentials: no EC2 IMDS role found" {
		t.Errorf("ClassifyError = %s, %q", kind, reason)
	}
}
