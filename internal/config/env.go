package config

import (
	"fmt"
	"regexp"
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
