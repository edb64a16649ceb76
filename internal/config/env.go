package config

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// envError is a problem with a ${...} reference. msg never contains the
// value being expanded; secret is msg without anything taken from the value,
// for keys that hold passwords.
type envError struct{ msg, secret string }

func (e *envError) Error() string { return e.msg }

func newEnvError(msg string) *envError { return &envError{msg: msg, secret: msg} }

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// expand replaces ${VAR} with the value of VAR and ${VAR:-default} with the
// value of VAR, or default when VAR is unset or empty. "$$" is a literal
// "$"; a "$" followed by anything else is kept as it is. The default is
// taken literally up to the first "}".
func expand(s string, lookupEnv func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '$')
		if i < 0 || i == len(s)-1 {
			b.WriteString(s)
			return b.String(), nil
		}
		b.WriteString(s[:i])
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			s = s[i+2:]
		case '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return "", newEnvError(`unterminated "${"; expected ${VAR} or ${VAR:-default} (write $$ for a literal $)`)
			}
			v, err := lookup(s[i+2:i+end], lookupEnv)
			if err != nil {
				return "", err
			}
			b.WriteString(v)
			s = s[i+end+1:]
		default:
			b.WriteByte('$')
			s = s[i+1:]
		}
	}
}

// lookup resolves the inside of one ${...}: "VAR" or "VAR:-default".
func lookup(ref string, lookupEnv func(string) (string, bool)) (string, error) {
	name, def, hasDef := strings.Cut(ref, ":-")
	if !envNameRE.MatchString(name) {
		const want = "expected letters, digits and _, not starting with a digit (write $$ for a literal $)"
		return "", &envError{
			msg:    fmt.Sprintf("invalid variable name %q in ${...}; %s", name, want),
			secret: "invalid variable name in ${...}; " + want,
		}
	}
	v, ok := lookupEnv(name)
	switch {
	case hasDef && v == "":
		return def, nil
	case !ok:
		return "", newEnvError(fmt.Sprintf("environment variable %s is not set; expected it to be set, or a default such as ${%s:-value}", name, name))
	}
	return v, nil
}

// envVar is one variable a value was expanded from.
type envVar struct{ name, value string }

// expansion is a scalar whose ${VAR} references were expanded to non-empty
// values. Values from the environment may be secrets (a password put in
// the wrong key, a token), so error messages about the scalar show raw, the
// text of the file, never value.
type expansion struct {
	raw   string   // the scalar as written, such as "${RF}"
	value string   // after expansion
	vars  []envVar // the variables that supplied non-empty text
}

// hideArgs replaces each string argument of a message that is taken from
// the expanded value (all of it, or a part that is not in the file's text)
// with the text of the file, and the expanded value inside an argument
// that holds it (a path joined to a directory) with the text of the file.
func (x *expansion) hideArgs(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		out[i] = a
		s, ok := a.(string)
		switch {
		case !ok || s == "":
		case strings.Contains(x.value, s) && !strings.Contains(x.raw, s):
			out[i] = x.raw
		case strings.Contains(s, x.value):
			out[i] = strings.ReplaceAll(s, x.value, x.raw)
		}
	}
	return out
}

// hide replaces in msg whatever is left of the expanded value and of each
// variable's value (quoted or not, and integers without their "_") with
// the text of the file or the variable's ${NAME}. A value shorter than
// shortValue is replaced only where it stands alone (not inside a word),
// so that a variable holding "5" does not turn "5s" into "${VAR}s".
func (x *expansion) hide(msg string) string {
	type pr struct{ old, new string }
	var ps []pr
	add := func(secret, shown string) {
		if secret != "" && secret != shown {
			ps = append(ps, pr{secret, shown})
		}
	}
	add(strconv.Quote(x.value), strconv.Quote(x.raw))
	add(x.value, x.raw)
	for _, v := range x.vars {
		ref := "${" + v.name + "}"
		q := strconv.Quote(v.value)
		add(q[1:len(q)-1], ref)
		add(v.value, ref)
		add(strings.ReplaceAll(v.value, "_", ""), ref)
	}
	// Longest first, so that a value is replaced whole before any part of
	// it; what was put in is not looked at again.
	slices.SortStableFunc(ps, func(a, b pr) int { return len(b.old) - len(a.old) })
	var b strings.Builder
next:
	for i := 0; i < len(msg); {
		for _, p := range ps {
			if strings.HasPrefix(msg[i:], p.old) && (len(p.old) >= shortValue || alone(msg, i, i+len(p.old))) {
				b.WriteString(p.new)
				i += len(p.old)
				continue next
			}
		}
		b.WriteByte(msg[i])
		i++
	}
	return b.String()
}

// shortValue is the length under which a value is hidden only where it
// stands alone.
const shortValue = 6

// alone reports whether msg[i:j] is not part of a longer word.
func alone(msg string, i, j int) bool {
	word := func(c byte) bool {
		return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
	}
	return (i == 0 || !word(msg[i-1])) && (j == len(msg) || !word(msg[j]))
}
