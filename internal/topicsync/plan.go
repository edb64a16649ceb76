package topicsync

import (
	"context"
	"regexp"

	"github.com/twmb/franz-go/pkg/kgo"
)

// DesiredConfigs returns the explicit configs a flow gives the target
// topic of a source topic whose explicit configs are source: the
// source's, less the keys matching exclude (topic_config_exclude), plus
// overrides (topic_config_overrides), as a pass of the Syncer does.
func DesiredConfigs(exclude []*regexp.Regexp, overrides map[string]string, source map[string]string) map[string]string {
	return configPolicy{exclude: exclude, overrides: overrides}.desired(source)
}

// ConfigChanges returns, sorted by key, the changes a pass would make to a
// target topic whose explicit configs are target to give it desired, such
// as "retention.ms: 3600000 -> 7200000" ("(default)" for a key not set).
// Keys set on the target alone are left as they are, as the Syncer does
// for keys it never managed.
func ConfigChanges(desired, target map[string]string) []string {
	cs := diffConfigs(desired, target, func(string) bool { return false })
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.String()
	}
	return out
}

// DescribeTopicConfigs returns, per topic, the configs set explicitly on
// it, or the topic's error; reqErr is the failure of a whole request.
func DescribeTopicConfigs(ctx context.Context, cl *kgo.Client, topics []string) (configs map[string]map[string]string, errs map[string]error, reqErr error) {
	return describeConfigs(ctx, cl, topics)
}

// DescribeSourceConfigs is DescribeTopicConfigs that also returns, per
// topic, its effective max.message.bytes (its own or its broker's), which
// WithHeadroom needs.
func DescribeSourceConfigs(ctx context.Context, cl *kgo.Client, topics []string) (configs map[string]map[string]string, maxMessage map[string]string, errs map[string]error, reqErr error) {
	return describeConfigsFull(ctx, cl, topics)
}
