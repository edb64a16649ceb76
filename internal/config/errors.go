package config

import (
	"errors"
	"sort"
	"strconv"
	"strings"
)

// Error is one problem in a config file. Its message is a single line.
type Error struct {
	File string // the file, as given to Load or Parse
	Line int    // 1-based; 0 when the problem has no line (a key that is missing from the top level)
	Key  string // key path such as flows[0].topics[1]; "" for the whole file
	Msg  string // what is wrong and what was expected
}

// Error returns "File:Line: Key: Msg", leaving out the parts that are empty.
func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		b.WriteString(e.File + ":" + strconv.Itoa(e.Line) + ": ")
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Line > 0:
		b.WriteString("line " + strconv.Itoa(e.Line) + ": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// errorList collects the problems found while decoding.
type errorList []*Error

// err returns nil, the only error, or all of them joined in file order;
// problems without a line come last.
func (l errorList) err() error {
	switch len(l) {
	case 0:
		return nil
	case 1:
		return l[0]
	}
	sorted := make([]*Error, len(l))
	copy(sorted, l)
	sort.SliceStable(sorted, func(i, j int) bool { return lineKey(sorted[i]) < lineKey(sorted[j]) })
	errs := make([]error, len(sorted))
	for i, e := range sorted {
		errs[i] = e
	}
	return errors.Join(errs...)
}

func lineKey(e *Error) int {
	if e.Line <= 0 {
		return int(^uint(0) >> 1)
	}
	return e.Line
}

// oneLine keeps a message on one line.
func oneLine(s string) string {
	return strings.NewReplacer("\r\n", `\n`, "\n", `\n`, "\r", `\r`).Replace(s)
}
