package config

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// Limits of memory_limit.
const (
	MinMemoryLimit = 128 << 20 // 128 MiB
	MaxMemoryLimit = 1 << 50   // 1 PiB
)

// sizeUnits are the units a size may carry, by their lower-case spelling:
// binary (KiB, and Ki as Kubernetes writes it) and decimal (KB).
var sizeUnits = map[string]int64{
	"b":   1,
	"kib": 1 << 10, "ki": 1 << 10, "kb": 1e3,
	"mib": 1 << 20, "mi": 1 << 20, "mb": 1e6,
	"gib": 1 << 30, "gi": 1 << 30, "gb": 1e9,
	"tib": 1 << 40, "ti": 1 << 40, "tb": 1e12,
}

// errAmbiguousUnit is parseSize's error for a one-letter unit such as M,
// which some tools read as MiB and others as MB.
var errAmbiguousUnit = errors.New("ambiguous unit")

// parseSize reads a size in bytes: an integer ("536870912", "1_048_576"),
// or a number with a unit ("512MiB", "1.5 GiB", "800MB", "2Gi"). Units
// are matched case-insensitively; a fraction is rounded down to whole
// bytes.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' && r != '_' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = strings.TrimSpace(s[:i]), strings.TrimSpace(s[i:])
	}
	num = strings.ReplaceAll(num, "_", "")
	if num == "" || strings.Count(num, ".") > 1 || num == "." {
		return 0, strconv.ErrSyntax
	}
	mult := int64(1)
	if unit != "" {
		m, ok := sizeUnits[strings.ToLower(unit)]
		switch {
		case ok:
			mult = m
		case len(unit) == 1 && strings.ContainsAny(unit, "kKmMgGtT"):
			return 0, errAmbiguousUnit
		default:
			return 0, strconv.ErrSyntax
		}
	}
	// Exact arithmetic: "0.1GB" is 100000000 bytes, not 99999999.
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, strconv.ErrSyntax
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	n := new(big.Int).Quo(r.Num(), r.Denom())
	if !n.IsInt64() {
		return 0, strconv.ErrRange
	}
	return n.Int64(), nil
}

// formatSize writes n bytes the way a person would write them in the
// file: 512MiB, 1.5GiB, 1000 (bytes) when no binary unit fits.
func formatSize(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%(u.size/4) == 0 {
			return strconv.FormatFloat(float64(n)/float64(u.size), 'f', -1, 64) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// FormatSize writes n bytes for a message, to a tenth of its unit:
// "512 MiB", "1.5 GiB", "1000 bytes".
func FormatSize(n int64) string {
	for _, u := range []struct {
		name string
		size float64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if float64(n) >= u.size {
			return strconv.FormatFloat(math.Round(float64(n)/u.size*10)/10, 'f', -1, 64) + " " + u.name
		}
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

// size decodes a size in bytes (see parseSize) between min and max.
func (d *decoder) size(f *field, dst *int64, min, max int64) bool {
	const want = "a size such as 512MiB (a number of bytes, or with a unit: KiB, MiB, GiB, TiB or KB, MB, GB, TB)"
	v, ok := d.scalar(f, want)
	if !ok {
		return false
	}
	n, err := parseSize(v)
	switch {
	case errors.Is(err, errAmbiguousUnit):
		u := strings.ToUpper(strings.TrimLeft(v, "0123456789._ "))
		d.errorf(f.val, f.path, "ambiguous unit in %s; expected %siB (1024-based) or %sB (1000-based)", d.quote(f.path, v), u, u)
		return false
	case errors.Is(err, strconv.ErrRange):
		d.errorf(f.val, f.path, "expected a size of at most %s, got %s", formatSize(max), d.quote(f.path, v))
		return false
	case err != nil:
		d.errorf(f.val, f.path, "expected %s, got %s", want, d.quote(f.path, v))
		return false
	}
	if n < min || n > max {
		what := fmt.Sprintf("between %s and %s", formatSize(min), formatSize(max))
		if max == math.MaxInt64 {
			what = "of at least " + formatSize(min)
		}
		d.errorf(f.val, f.path, "expected a size %s, got %s", what, v)
		return false
	}
	*dst = n
	return true
}

// memoryLimit decodes the top-level memory_limit.
func (d *decoder) memoryLimit(f *field, cfg *Config) {
	if d.size(f, &cfg.MemoryLimit, MinMemoryLimit, MaxMemoryLimit) {
		cfg.MemoryLimitLine = f.at().Line
	}
}
