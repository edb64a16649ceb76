package aclsync

import (
	"regexp"
	"regexp/syntax"
)

// A PREFIXED ACL applies to every name that starts with its prefix. These
// functions tell how a flow's (anchored) regexes relate to such a set of
// names by running the regex's program over the prefix: the states alive
// after it are the ways the regex can go on.

// canMatchPrefixed reports whether re can match some name that starts with
// prefix. It may say yes for a regex that cannot (every zero-width
// assertion after the prefix is taken as satisfiable), never no for one
// that can.
func canMatchPrefixed(re *regexp.Regexp, prefix string) bool {
	prog, ok := compile(re)
	if !ok {
		return true
	}
	seeds := consume(prog, prefix)
	if seeds == nil {
		return false
	}
	return len(closure(prog, seeds, func(syntax.EmptyOp) bool { return true })) > 0
}

// matchesAllPrefixed reports whether re matches every name that starts
// with prefix, the prefix itself included. It recognises a regex that,
// once the prefix is read, can end and can read anything (orders\..*
// with prefix "orders.", .* with any prefix); it may say no for others
// that do match every such name, never yes for one that does not.
func matchesAllPrefixed(re *regexp.Regexp, prefix string) bool {
	prog, ok := compile(re)
	if !ok {
		return false
	}
	seeds := consume(prog, prefix)
	if seeds == nil {
		return false
	}
	if !hasMatch(prog, closure(prog, seeds, atEnd)) {
		return false // the prefix alone is not matched
	}
	for pc := range closure(prog, seeds, never) {
		if op := prog.Inst[pc].Op; op != syntax.InstRuneAny && op != syntax.InstRuneAnyNotNL {
			continue
		}
		// pc reads any rune and comes back to itself, and the regex can
		// end after any of them: every suffix is matched.
		next := []uint32{prog.Inst[pc].Out}
		if closure(prog, next, never)[pc] && hasMatch(prog, closure(prog, next, atEnd)) {
			return true
		}
	}
	return false
}

func compile(re *regexp.Regexp) (*syntax.Prog, bool) {
	parsed, err := syntax.Parse(re.String(), syntax.Perl)
	if err != nil {
		return nil, false
	}
	prog, err := syntax.Compile(parsed.Simplify())
	if err != nil {
		return nil, false
	}
	return prog, true
}

// consume runs prog over s from its start and returns the instructions
// that follow the last rune read (to be closed over), or nil if no thread
// is alive. Zero-width assertions inside s are checked exactly; those
// after its last rune are left to the caller.
func consume(prog *syntax.Prog, s string) []uint32 {
	runes := []rune(s)
	seeds := []uint32{uint32(prog.Start)}
	prev := rune(-1)
	for i, r := range runes {
		ctx := syntax.EmptyOpContext(prev, r)
		var next []uint32
		for pc := range closure(prog, seeds, func(op syntax.EmptyOp) bool { return op&^ctx == 0 }) {
			in := &prog.Inst[pc]
			switch in.Op {
			case syntax.InstRuneAny:
			case syntax.InstRuneAnyNotNL:
				if r == '\n' {
					continue
				}
			case syntax.InstRune, syntax.InstRune1:
				if !in.MatchRune(r) {
					continue
				}
			default:
				continue
			}
			next = append(next, in.Out)
		}
		if len(next) == 0 {
			return nil
		}
		seeds, prev = next, runes[i]
	}
	if len(runes) == 0 {
		// Nothing read: the start of the text holds.
		return seedsAtStart(prog, seeds)
	}
	return seeds
}

// seedsAtStart follows the start-of-text assertions at the very start of
// prog, which hold there whatever comes next.
func seedsAtStart(prog *syntax.Prog, seeds []uint32) []uint32 {
	var out []uint32
	seen := map[uint32]bool{}
	var visit func(pc uint32)
	visit = func(pc uint32) {
		if seen[pc] {
			return
		}
		seen[pc] = true
		in := &prog.Inst[pc]
		switch in.Op {
		case syntax.InstAlt, syntax.InstAltMatch:
			visit(in.Out)
			visit(in.Arg)
		case syntax.InstCapture, syntax.InstNop:
			visit(in.Out)
		case syntax.InstEmptyWidth:
			if syntax.EmptyOp(in.Arg)&^(syntax.EmptyBeginText|syntax.EmptyBeginLine) == 0 {
				visit(in.Out)
				return
			}
			out = append(out, pc)
		default:
			out = append(out, pc)
		}
	}
	for _, pc := range seeds {
		visit(pc)
	}
	return out
}

// closure returns the instructions that read a rune or match, reachable
// from seeds without reading, passing the zero-width assertions pass
// allows.
func closure(prog *syntax.Prog, seeds []uint32, pass func(syntax.EmptyOp) bool) map[uint32]bool {
	out := map[uint32]bool{}
	seen := map[uint32]bool{}
	stack := append([]uint32(nil), seeds...)
	for len(stack) > 0 {
		pc := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[pc] {
			continue
		}
		seen[pc] = true
		in := &prog.Inst[pc]
		switch in.Op {
		case syntax.InstAlt, syntax.InstAltMatch:
			stack = append(stack, in.Out, in.Arg)
		case syntax.InstCapture, syntax.InstNop:
			stack = append(stack, in.Out)
		case syntax.InstEmptyWidth:
			if pass(syntax.EmptyOp(in.Arg)) {
				stack = append(stack, in.Out)
			}
		case syntax.InstFail:
		default:
			out[pc] = true
		}
	}
	return out
}

// atEnd passes the assertions that hold at the end of the text.
func atEnd(op syntax.EmptyOp) bool {
	return op&^(syntax.EmptyEndText|syntax.EmptyEndLine) == 0
}

// never passes no assertion.
func never(syntax.EmptyOp) bool { return false }

func hasMatch(prog *syntax.Prog, set map[uint32]bool) bool {
	for pc := range set {
		if prog.Inst[pc].Op == syntax.InstMatch {
			return true
		}
	}
	return false
}
