package mm2import

import (
	"fmt"
	"strconv"
	"strings"
)

// Property is one key and value of a .properties file, with the line its
// logical line starts on.
type Property struct {
	Key, Value string
	Line       int
}

// ParseProperties reads data as java.util.Properties.load does: lines
// whose first non-blank character is '#' or '!' are comments; a line
// ending with an odd number of backslashes continues on the next one
// (whose leading blanks are dropped); the key ends at the first
// unescaped '=', ':' or blank, and one '=' or ':' after blanks is
// skipped; escapes \t \n \r \f \uXXXX are decoded and any other escaped
// character stands for itself. A key given twice keeps its last value, as
// in Java; the returned list holds each key once, at the line of its last
// value, in file order.
func ParseProperties(data []byte) ([]Property, error) {
	text := strings.ReplaceAll(strings.ReplaceAll(string(data), "\r\n", "\n"), "\r", "\n")
	lines := strings.Split(text, "\n")
	var props []Property
	index := map[string]int{}
	for i := 0; i < len(lines); i++ {
		start := i + 1
		line := strings.TrimLeft(lines[i], " \t\f")
		if line == "" || line[0] == '#' || line[0] == '!' {
			continue
		}
		logical := ""
		for {
			if n := trailingBackslashes(line); n%2 == 1 {
				logical += line[:len(line)-1]
				i++
				if i >= len(lines) {
					break
				}
				line = strings.TrimLeft(lines[i], " \t\f")
				continue
			}
			logical += line
			break
		}
		key, value, err := splitProperty(logical)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", start, err)
		}
		if j, ok := index[key]; ok {
			props = append(props[:j], props[j+1:]...)
			for k, v := range index {
				if v > j {
					index[k] = v - 1
				}
			}
		}
		index[key] = len(props)
		props = append(props, Property{Key: key, Value: value, Line: start})
	}
	return props, nil
}

func trailingBackslashes(s string) int {
	n := 0
	for i := len(s) - 1; i >= 0 && s[i] == '\\'; i-- {
		n++
	}
	return n
}

// splitProperty splits a logical line into its unescaped key and value.
func splitProperty(s string) (key, value string, err error) {
	end := len(s)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' {
			i++
			continue
		}
		if c == '=' || c == ':' || c == ' ' || c == '\t' || c == '\f' {
			end = i
			break
		}
	}
	rest := s[end:]
	rest = strings.TrimLeft(rest, " \t\f")
	if rest != "" && (rest[0] == '=' || rest[0] == ':') {
		rest = strings.TrimLeft(rest[1:], " \t\f")
	}
	if key, err = unescape(s[:end]); err != nil {
		return "", "", err
	}
	if value, err = unescape(rest); err != nil {
		return "", "", err
	}
	return key, value, nil
}

// unescape decodes the escapes of a .properties key or value.
func unescape(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			if c != '\\' {
				b.WriteByte(c)
			}
			continue
		}
		i++
		switch s[i] {
		case 't':
			b.WriteByte('\t')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 'f':
			b.WriteByte('\f')
		case 'u':
			if i+5 > len(s) {
				return "", fmt.Errorf("malformed \\uXXXX escape in %q", s)
			}
			r, err := strconv.ParseUint(s[i+1:i+5], 16, 16)
			if err != nil {
				return "", fmt.Errorf("malformed \\uXXXX escape in %q", s)
			}
			b.WriteRune(rune(r))
			i += 4
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String(), nil
}
