package kafka

import (
	"context"
	"fmt"
	"net"
	"strings"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/aws"

	"github.com/kmirror/kmirror/internal/config"
)

// mskUserAgent is sent with every AWS_MSK_IAM authentication; IAM policies
// can match it with the aws:UserAgent condition key.
const mskUserAgent = "kmirror"

// mskMechanism returns the AWS_MSK_IAM mechanism for s: franz-go's, which
// signs the request, with credentials from the AWS SDK's default chain
// (environment, shared config and credentials files, web identity, ECS
// and EC2 roles). Credentials are fetched at each authentication through
// the SDK's cache, so temporary credentials are renewed before they
// expire.
func mskMechanism(ctx context.Context, s *config.SASL) (sasl.Mechanism, error) {
	var opts []func(*awsconfig.LoadOptions) error
	if s.Region != "" {
		opts = append(opts, awsconfig.WithRegion(s.Region))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("sasl AWS_MSK_IAM: loading the AWS configuration: %w", err)
	}
	return mskFromProvider(cfg.Credentials, s.Region), nil
}

// mskFromProvider returns the AWS_MSK_IAM mechanism with credentials from
// creds. region, if set, must be the region of the brokers' host names.
func mskFromProvider(creds awssdk.CredentialsProvider, region string) sasl.Mechanism {
	return msk{
		Mechanism: aws.ManagedStreamingIAM(func(ctx context.Context) (aws.Auth, error) {
			if creds == nil {
				return aws.Auth{}, fmt.Errorf("no AWS credentials found; expected AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, web identity or an instance role")
			}
			c, err := creds.Retrieve(ctx)
			if err != nil {
				return aws.Auth{}, fmt.Errorf("getting AWS credentials: %w", err)
			}
			return aws.Auth{
				AccessKey:    c.AccessKeyID,
				SecretKey:    c.SecretAccessKey,
				SessionToken: c.SessionToken,
				UserAgent:    mskUserAgent,
			}, nil
		}),
		region: region,
	}
}

// msk checks, before franz-go signs, that the broker's host name is in the
// configured region: franz-go signs for the region named in the host, as
// Amazon's own client does, and a mismatch would otherwise surface as a
// bare authentication failure.
type msk struct {
	sasl.Mechanism
	region string
}

func (m msk) Authenticate(ctx context.Context, host string) (sasl.Session, []byte, error) {
	if m.region != "" {
		if hr := hostRegion(host); hr != "" && hr != m.region {
			return nil, nil, credentialsError{fmt.Errorf("AWS_MSK_IAM: broker %s is in region %s, but sasl.region is %s", host, hr, m.region)}
		}
	}
	s, first, err := m.Mechanism.Authenticate(ctx, host)
	if err != nil {
		return nil, nil, credentialsError{fmt.Errorf("AWS_MSK_IAM: %w", err)}
	}
	return s, first, nil
}

// hostRegion is the region in an AWS host name such as
// b-1.x.kafka.us-east-1.amazonaws.com, or "".
func hostRegion(hostport string) string {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	for _, suffix := range [...]string{".amazonaws.com", ".amazonaws.com.cn", ".c2s.ic.gov", ".sc2s.sgov.gov"} {
		if rest, ok := strings.CutSuffix(host, suffix); ok {
			if i := strings.LastIndexByte(rest, '.'); i >= 0 {
				return rest[i+1:]
			}
		}
	}
	return ""
}
