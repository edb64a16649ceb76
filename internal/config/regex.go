package config

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
)

// Limits on a topic or group regex, so that a regex cannot make kmirror slow
// (every topic name is matched against it on each refresh) or fail after
// validation.
const (
	MaxRegexLen   = 10_000 // bytes of the regex as written
	MaxRegexInsts = 10_000 // instructions of the compiled matcher
)

// regex compiles re, the value of item, anchored at both ends as it is used
// (^(?:re)$), and checks its size. It records the problem and returns nil
// if re is not a valid regex or is too complex.
// A regex used again (through an alias) is compiled once.
func (d *decoder) regex(item *field, re string) *regexp.Regexp {
	if len(re) > MaxRegexLen {
		d.errorf(item.val, item.path, "regex of %d bytes is too long; expected at most %d", len(re), MaxRegexLen)
		return nil
	}
	if c, ok := d.regexps[re]; ok {
		return c
	}
	compiled, err := compileAnchored1(re)
	if err != nil {
		shown := re
		if len(shown) > maxShownRegex {
			shown = shown[:maxShownRegex] + "..."
		}
		var se *syntax.Error
		switch {
		case errors.As(err, &se) && d.expanded[item.val] != nil:
			// The offending part comes from the environment: not shown.
			d.errorf(item.val, item.path, "invalid regex %q: %s", shown, se.Code)
		default:
			d.errorf(item.val, item.path, "invalid regex %q: %s", shown, regexpProblem(err))
		}
		return nil
	}
	if d.regexps == nil {
		d.regexps = map[string]*regexp.Regexp{}
	}
	d.regexps[re] = compiled
	return compiled
}

// maxShownRegex is how much of an invalid regex its error quotes.
const maxShownRegex = 100

// compileAnchored1 compiles re as ^(?:re)$, refusing a matcher of more
// than MaxRegexInsts instructions.
func compileAnchored1(re string) (*regexp.Regexp, error) {
	if _, err := syntax.Parse(re, syntax.Perl); err != nil {
		return nil, err // about re as written
	}
	anchored := `^(?:` + re + `)$`
	parsed, err := syntax.Parse(anchored, syntax.Perl)
	if err != nil {
		// The one more group nests too deeply, or the whole is too
		// large: the code alone says it.
		var se *syntax.Error
		if errors.As(err, &se) {
			return nil, &syntax.Error{Code: se.Code}
		}
		return nil, err
	}
	prog, err := syntax.Compile(parsed.Simplify())
	if err != nil {
		return nil, err
	}
	if n := len(prog.Inst); n > MaxRegexInsts {
		return nil, fmt.Errorf("too complex: compiles to %d instructions; expected at most %d (fewer repetitions or alternatives)", n, MaxRegexInsts)
	}
	return regexp.Compile(anchored)
}
