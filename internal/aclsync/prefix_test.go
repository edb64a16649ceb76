package aclsync

import (
	"regexp"
	"testing"
)

func anchored(re string) *regexp.Regexp { return regexp.MustCompile(`^(?:` + re + `)$`) }

func TestCanMatchPrefixed(t *testing.T) {
	tests := []struct {
		re, prefix string
		want       bool
	}{
		{`.*`, "orders", true},
		{`orders`, "ord", true},
		{`orders`, "orders", true},
		{`orders`, "orders.", false},
		{`orders`, "pay", false},
		{`orders\..*`, "orders", true},
		{`orders\..*`, "orders.eu.", true},
		{`orders\..*`, "ordersX", false},
		{`(orders|payments)-.*`, "pay", true},
		{`(orders|payments)-.*`, "payments-x", true},
		{`(orders|payments)-.*`, "refunds", false},
		{`(?i)ORDERS.*`, "orders", true},
		{`[a-c]+`, "abcab", true},
		{`[a-c]+`, "abd", false},
		{`orders$x`, "orders", true}, // over-approximated at the end, never wrong the other way
		{`a\bb`, "ab", false},        // checked exactly inside the prefix
		{`x`, "", true},
	}
	for _, tc := range tests {
		if got := canMatchPrefixed(anchored(tc.re), tc.prefix); got != tc.want {
			t.Errorf("canMatchPrefixed(%q, %q) = %v, want %v", tc.re, tc.prefix, got, tc.want)
		}
	}
}

func TestMatchesAllPrefixed(t *testing.T) {
	tests := []struct {
		re, prefix string
		want       bool
	}{
		{`.*`, "orders", true},
		{`.*`, "", true},
		{`orders\..*`, "orders.", true},
		{`orders\..*`, "orders.eu", true},
		{`orders\..*`, "orders", false}, // "orders" itself, "ordersX" not excluded
		{`orders.*`, "orders", true},
		{`orders.*`, "ord", false},
		{`(test|tmp)-.*`, "tmp-", true},
		{`(test|tmp)-.*`, "tmp-a.b", true},
		{`orders`, "orders", false},
		{`orders\.[a-z]*`, "orders.", false}, // "orders.1" is not excluded
		{`orders\b.*`, "orders", false},      // "ordersX" is not excluded
		{`internal\..+`, "internal.", false}, // the prefix itself is not excluded
		{`internal\..+`, "internal.x", true},
	}
	for _, tc := range tests {
		if got := matchesAllPrefixed(anchored(tc.re), tc.prefix); got != tc.want {
			t.Errorf("matchesAllPrefixed(%q, %q) = %v, want %v", tc.re, tc.prefix, got, tc.want)
		}
	}
}

// The analysis never contradicts the regex on real names: a name that
// starts with the prefix and matches means canMatch; one that does not
// match means not matchesAll.
func TestPrefixAnalysisAgreesWithRegexp(t *testing.T) {
	res := []string{`.*`, `orders`, `orders\..*`, `orders.*`, `(orders|payments)-.*`, `[a-c]+`, `a.c`, `(?i)AB.*`, `x|xy.*`}
	names := []string{"", "a", "ab", "abc", "abd", "orders", "orders.", "orders.eu", "ordersX", "payments-1", "x", "xy", "xyz", "AB", "abz"}
	for _, re := range res {
		rx := anchored(re)
		for _, name := range names {
			for i := 0; i <= len(name); i++ {
				prefix := name[:i]
				if rx.MatchString(name) && !canMatchPrefixed(rx, prefix) {
					t.Errorf("%q matches %q but canMatchPrefixed(%q) = false", re, name, prefix)
				}
				if !rx.MatchString(name) && matchesAllPrefixed(rx, prefix) {
					t.Errorf("%q does not match %q but matchesAllPrefixed(%q) = true", re, name, prefix)
				}
			}
		}
	}
}
