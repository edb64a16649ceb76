package config

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// MaxNodes bounds the work of decoding one file: the number of keys and
// list items visited, each use of an alias or merge key (<<) counting the
// keys and items it brings in again. A file past it is refused, so that
// aliases nested into one another (a "billion laughs") cannot exhaust
// memory or time.
const MaxNodes = 200_000

// decoder walks the yaml.Node tree of one file. It records every problem
// and keeps going, so that one run reports all of them.
type decoder struct {
	file      string
	dir       string // base of relative paths
	lookupEnv func(string) (string, bool)
	errs      errorList

	visited   int                       // keys and list items visited, aliases and merges included
	tooLarge  *Error                    // set once visited passes MaxNodes; then the only error
	expanded  map[*yaml.Node]*expansion // scalars whose value came from the environment
	mergeSize map[*yaml.Node]int        // keys a mapping brings in when merged (<<), its own merges included
	regexps   map[string]*regexp.Regexp // regexes compiled so far, by source
	// groups are the ownership_group values decoded so far, by target
	// cluster and group: where each was set.
	groups map[[2]string]*field
}

func (d *decoder) err() error {
	if d.tooLarge != nil {
		return d.tooLarge
	}
	return d.errs.err()
}

// visit counts one key or list item at node n. It returns false once the
// file is past MaxNodes, after recording why: the walk then stops.
func (d *decoder) visit(n *yaml.Node) bool { return d.visitN(n, 1) }

// visitN is visit for k keys or items at once.
func (d *decoder) visitN(n *yaml.Node, k int) bool {
	if d.tooLarge != nil {
		return false
	}
	if d.visited += k; d.visited <= MaxNodes {
		return true
	}
	d.tooLarge = &Error{File: d.file, Line: n.Line,
		Msg: fmt.Sprintf("too many keys and list items (more than %d, counting those each alias and merge key (<<) brings in again); expected a smaller file, with aliases not nested into one another", MaxNodes)}
	return false
}

// errorf records a problem with key path at node n's line (no line if n is
// nil). When n's value came from environment variables, the message shows
// the ${VAR} references instead of what they expanded to, whatever the
// caller formatted into it.
func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	if d.tooLarge != nil {
		return
	}
	var x *expansion
	if n != nil {
		x = d.expanded[n]
	}
	args = slices.Clone(args)
	if x != nil {
		args = x.hideArgs(args)
	}
	for i, a := range args {
		if s, ok := a.(string); ok && len(s) > maxShown {
			args[i] = s[:maxShown] + "..."
		}
	}
	msg := fmt.Sprintf(format, args...)
	if x != nil {
		msg = x.hide(msg)
	}
	e := &Error{File: d.file, Key: path, Msg: oneLine(msg)}
	if n != nil {
		e.Line = n.Line
	}
	d.errs = append(d.errs, e)
}

// maxShown is how much of a long value (a regex, an address) a message
// quotes.
const maxShown = 1000

// field is one key of a mapping, or one item of a list, with its value.
type field struct {
	path string     // key path, such as flows[0].topics[1]
	key  *yaml.Node // nil for list items
	val  *yaml.Node // aliases resolved
}

// at is the node to blame for a problem with the field as a whole.
func (f *field) at() *yaml.Node {
	if f.key != nil {
		return f.key
	}
	return f.val
}

// mapping is a YAML mapping whose keys have been checked.
type mapping struct {
	path   string
	at     *yaml.Node // blamed for missing keys
	order  []string   // keys in file order
	fields map[string]*field
}

// get returns the field of key, or nil if the key is not in the file.
func (m *mapping) get(key string) *field {
	if m == nil {
		return nil
	}
	return m.fields[key]
}

// missing records that m lacks key, which is required.
func (d *decoder) missing(m *mapping, key, want string) {
	d.errorf(m.at, join(m.path, key), "missing; expected %s", want)
}

// mapping checks that f's value is a mapping holding only the keys listed in
// known (space-separated; "" allows any key) and no key twice, and returns
// it. It returns nil, after recording why, if the value is not a mapping.
// Merge keys ("<<: *anchor") are honoured; keys written out win over merged
// ones.
func (d *decoder) mapping(f *field, want, known string) *mapping {
	if f.val.Kind != yaml.MappingNode {
		d.errorf(f.val, f.path, "expected %s, got %s", want, d.describe(f.val, f.path))
		return nil
	}
	m := &mapping{path: f.path, at: f.at(), fields: map[string]*field{}}
	knownKeys := strings.Fields(known)
	for _, p := range d.pairs(f.val, f.path, nil, map[*yaml.Node]bool{}) {
		name := p.key.Value
		path := join(f.path, name)
		if known != "" && !slices.Contains(knownKeys, name) {
			d.errorf(p.key, path, "unknown key; expected one of: %s", strings.Join(knownKeys, ", "))
			continue
		}
		if prev, dup := m.fields[name]; dup {
			if !p.merged {
				d.errorf(p.key, path, "duplicate key; already set on line %d; expected each key once", prev.key.Line)
			}
			continue
		}
		m.order = append(m.order, name)
		m.fields[name] = &field{path: path, key: p.key, val: resolve(p.val)}
	}
	return m
}

type pair struct {
	key, val *yaml.Node
	merged   bool
}

// pairs returns the key/value pairs of mapping n: first those written in
// it, then those merged in with "<<", nearest merge first. merging holds
// the mappings being merged into n, to catch a mapping merged into itself;
// done holds the mappings already merged, whose keys, coming later, would
// be ignored: each is merged once.
func (d *decoder) pairs(n *yaml.Node, path string, merging []*yaml.Node, done map[*yaml.Node]bool) []pair {
	var own, merged []pair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !d.visit(k) {
			return nil
		}
		switch {
		case k.Kind != yaml.ScalarNode:
			d.errorf(k, path, "expected a key name, got %s", d.describe(k, path))
		case k.ShortTag() == "!!merge":
			merged = append(merged, d.merge(k, v, path, append(merging, n), done)...)
		default:
			own = append(own, pair{key: k, val: v})
		}
	}
	return append(own, merged...)
}

// merge returns the pairs that the value v of "<<" key k brings in.
func (d *decoder) merge(k, v *yaml.Node, path string, merging []*yaml.Node, done map[*yaml.Node]bool) []pair {
	const want = "a mapping or a list of mappings to merge (<<)"
	var sources []*yaml.Node
	switch v = resolve(v); v.Kind {
	case yaml.MappingNode:
		sources = []*yaml.Node{v}
	case yaml.SequenceNode:
		sources = v.Content
	default:
		d.errorf(v, path, "expected %s, got %s", want, d.describe(v, path))
		return nil
	}
	var out []pair
	for _, s := range sources {
		if !d.visit(s) { // each mapping named, even if merged already
			return nil
		}
		switch s = resolve(s); {
		case s.Kind != yaml.MappingNode:
			d.errorf(s, path, "expected %s, got %s", want, d.describe(s, path))
			continue
		case slices.Contains(merging, s):
			d.errorf(k, path, "merge (<<) of a mapping into itself; expected a mapping defined elsewhere")
			continue
		case len(merging) > maxMergeDepth:
			d.errorf(k, path, "merges (<<) nested more than %d deep; expected fewer", maxMergeDepth)
			continue
		case done[s]:
			// Counted as if merged again, as a YAML library would, so
			// that merges nested into one another are refused rather than
			// silently accepted.
			if !d.visitN(k, d.mergeSize[s]) {
				return nil
			}
			continue
		}
		done[s] = true
		before := d.visited
		ps := d.pairs(s, path, merging, done)
		if d.mergeSize == nil {
			d.mergeSize = map[*yaml.Node]int{}
		}
		d.mergeSize[s] = d.visited - before
		for _, p := range ps {
			p.merged = true
			out = append(out, p)
		}
	}
	return out
}

// maxMergeDepth bounds merges (<<) of mappings that merge others in turn.
const maxMergeDepth = 16

// resolve follows aliases to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// list returns the items of f's value, which must be a YAML sequence, as
// fields.
func (d *decoder) list(f *field, want string) ([]*field, bool) {
	if f.val.Kind != yaml.SequenceNode {
		d.errorf(f.val, f.path, "expected %s, got %s", want, d.describe(f.val, f.path))
		return nil, false
	}
	items := make([]*field, len(f.val.Content))
	for i, n := range f.val.Content {
		if !d.visit(n) {
			return nil, false
		}
		items[i] = &field{path: index(f.path, i), val: resolve(n)}
	}
	return items, true
}

// scalar returns f's value with environment variables expanded.
func (d *decoder) scalar(f *field, want string) (string, bool) {
	n := f.val
	if n.Kind != yaml.ScalarNode || isNull(n) {
		d.errorf(n, f.path, "expected %s, got %s", want, d.describe(n, f.path))
		return "", false
	}
	var vars []envVar
	v, err := expand(n.Value, func(name string) (string, bool) {
		v, ok := d.lookupEnv(name)
		if ok && v != "" {
			vars = append(vars, envVar{name, v})
		}
		return v, ok
	})
	if len(vars) > 0 {
		if d.expanded == nil {
			d.expanded = map[*yaml.Node]*expansion{}
		}
		d.expanded[n] = &expansion{raw: n.Value, value: v, vars: vars}
	}
	if err != nil {
		var ee *envError
		if errors.As(err, &ee) && sensitive(f.path) {
			d.errorf(n, f.path, "%s", ee.secret)
		} else {
			d.errorf(n, f.path, "%v", err)
		}
		return "", false
	}
	return v, true
}

// str decodes a string.
func (d *decoder) str(f *field, dst *string) bool {
	v, ok := d.scalar(f, "a string")
	if ok {
		*dst = v
	}
	return ok
}

// nonEmpty decodes a string that must not be empty; want says what it is.
func (d *decoder) nonEmpty(f *field, dst *string, want string) bool {
	v, ok := d.scalar(f, want)
	if !ok {
		return false
	}
	if v == "" {
		d.errorf(f.val, f.path, "empty; expected %s", want)
		return false
	}
	*dst = v
	return true
}

// boolean decodes true or false.
func (d *decoder) boolean(f *field, dst *bool) bool {
	v, ok := d.scalar(f, "true or false")
	if !ok {
		return false
	}
	switch strings.ToLower(v) {
	case "true":
		*dst = true
	case "false":
		*dst = false
	default:
		d.errorf(f.val, f.path, "expected true or false, got %s", d.quote(f.path, v))
		return false
	}
	return true
}

// duration decodes a duration with a unit, such as "5s", between min and
// max.
func (d *decoder) duration(f *field, dst *time.Duration, min, max time.Duration) bool {
	v, ok := d.scalar(f, "a duration such as 5s")
	if !ok {
		return false
	}
	dur, err := time.ParseDuration(v)
	if err != nil {
		hint := ""
		if _, err := strconv.ParseFloat(v, 64); err == nil {
			hint = " (a unit is required: ms, s, m or h)"
		}
		d.errorf(f.val, f.path, "expected a duration such as 5s, got %s%s", d.quote(f.path, v), hint)
		return false
	}
	if dur < min || dur > max {
		d.errorf(f.val, f.path, "expected a duration %s, got %s", durationRange(min, max), v)
		return false
	}
	*dst = dur
	return true
}

func durationRange(min, max time.Duration) string {
	if max == math.MaxInt64 {
		return "of at least " + fmtDuration(min)
	}
	return "between " + fmtDuration(min) + " and " + fmtDuration(max)
}

// fmtDuration writes d as it would be written in the file: 10m, not 10m0s.
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// integer decodes a decimal integer between min and max; want describes the
// range for the error message, such as "an integer from 1 to 10".
func integer[T int | int32 | int64](d *decoder, f *field, dst *T, min, max int64, want string) bool {
	v, ok := d.scalar(f, "an integer")
	if !ok {
		return false
	}
	i, err := strconv.ParseInt(strings.ReplaceAll(v, "_", ""), 10, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		d.errorf(f.val, f.path, "expected an integer, got %s", d.quote(f.path, v))
		return false
	}
	if err != nil || i < min || i > max {
		d.errorf(f.val, f.path, "expected %s, got %s", want, v)
		return false
	}
	*dst = T(i)
	return true
}

// enum decodes one of values, compared case-insensitively, and stores the
// value as it is spelled in values.
func (d *decoder) enum(f *field, dst *string, values ...string) bool {
	want := oneOf(values)
	v, ok := d.scalar(f, want)
	if !ok {
		return false
	}
	for _, val := range values {
		if strings.EqualFold(v, val) {
			*dst = val
			return true
		}
	}
	d.errorf(f.val, f.path, "unknown value %s; expected %s", d.quote(f.path, v), want)
	return false
}

// oneOf lists values as "a, b or c".
func oneOf(values []string) string {
	if len(values) == 1 {
		return values[0]
	}
	return strings.Join(values[:len(values)-1], ", ") + " or " + values[len(values)-1]
}

// describe says what node n is, for "expected X, got Y" messages.
func (d *decoder) describe(n *yaml.Node, path string) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "an empty value"
		}
		return d.quote(path, n.Value)
	}
	return "nothing"
}

// quote quotes v for a message, unless path holds a password.
func (d *decoder) quote(path, v string) string {
	if sensitive(path) {
		return "a hidden value"
	}
	return strconv.Quote(v)
}

// sensitive reports whether the value at path is a secret that messages
// must not show.
func sensitive(path string) bool {
	for _, key := range [...]string{"password", "client_secret"} {
		if path == key || strings.HasSuffix(path, "."+key) || strings.Contains(path, "."+key+".") ||
			strings.HasSuffix(path, `["`+key+`"]`) {
			return true
		}
	}
	return false
}

var plainKeyRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// join appends key to path: "a.b", or `a["odd key"]` for keys that are not
// plain words.
func join(path, key string) string {
	switch {
	case !plainKeyRE.MatchString(key):
		return path + "[" + strconv.Quote(key) + "]"
	case path == "":
		return key
	}
	return path + "." + key
}

// index appends a list index to path: "a[3]".
func index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}
