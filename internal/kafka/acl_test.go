package kafka

import (
	"errors"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kmirror/kmirror/internal/config"
)

func TestDenied(t *testing.T) {
	scram := &config.Cluster{Alias: "dst", SASL: &config.SASL{Mechanism: "SCRAM-SHA-512", Username: "kmirror", Password: "hunter2"}}
	plain := &config.Cluster{Alias: "src"}
	other := errors.New("boom")
	for _, tc := range []struct {
		name    string
		c       *config.Cluster
		op, res string
		target  string
		err     error
		want    string // "" = err returned as it is
	}{
		{"write refused", scram, OpWrite, ResTopic, "src.orders", fmt.Errorf("producing: %w", kerr.TopicAuthorizationFailed),
			`cluster "dst": not authorized: WRITE on topic "src.orders" (principal User:kmirror); grant it, see docs/security.md: producing: TOPIC_AUTHORIZATION_FAILED: Not authorized to access topics: [Topic authorization failed.]`},
		{"idempotent write refused", scram, OpWrite, ResTopic, "src.orders", kerr.ClusterAuthorizationFailed,
			`cluster "dst": not authorized: IDEMPOTENT_WRITE on cluster (principal User:kmirror); grant it, see docs/security.md: CLUSTER_AUTHORIZATION_FAILED: Cluster authorization failed.`},
		{"create on cluster", scram, OpCreate, ResTopic, "src.orders", kerr.ClusterAuthorizationFailed,
			`cluster "dst": not authorized: CREATE on cluster (principal User:kmirror); grant it, see docs/security.md: CLUSTER_AUTHORIZATION_FAILED: Cluster authorization failed.`},
		{"anonymous read", plain, OpRead, ResTopic, "orders", kerr.TopicAuthorizationFailed,
			`cluster "src": not authorized: READ on topic "orders" (principal User:ANONYMOUS); grant it, see docs/security.md: TOPIC_AUTHORIZATION_FAILED: Not authorized to access topics: [Topic authorization failed.]`},
		{"not an ACL error", scram, OpWrite, ResTopic, "src.orders", other, ""},
		{"nil", scram, OpWrite, ResTopic, "src.orders", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := AccessOf(tc.c).Denied(tc.op, tc.res, tc.target, tc.err)
			if tc.want == "" {
				if got != tc.err {
					t.Fatalf("got %v, want the error unchanged", got)
				}
				return
			}
			if got.Error() != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
			if !errors.Is(got, tc.err) || !IsDenied(got) {
				t.Fatalf("%v does not wrap %v", got, tc.err)
			}
			// Named once: wrapping again keeps the first naming.
			if again := AccessOf(tc.c).Denied(OpRead, ResGroup, "g", got); again != got {
				t.Fatalf("named twice: %v", again)
			}
		})
	}
}

func TestDeniedNamedLater(t *testing.T) {
	err := fmt.Errorf("creating topic: %w", Denied(OpCreate, ResTopic, "__kmirror.f.progress", kerr.TopicAuthorizationFailed))
	const bare = `creating topic: not authorized: CREATE on topic "__kmirror.f.progress"; grant it`
	if got := err.Error(); got[:len(bare)] != bare {
		t.Fatalf("got %s", got)
	}
	a := Access{Cluster: "dst", Principal: "User:kmirror"}
	const named = `creating topic: cluster "dst": not authorized: CREATE on topic "__kmirror.f.progress" (principal User:kmirror); grant it`
	if got := a.Name(err).Error(); got[:len(named)] != named {
		t.Fatalf("got %s", got)
	}
}
