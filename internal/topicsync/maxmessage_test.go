package topicsync

import (
	"strconv"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestHeaderSize checks HeaderSize against the bytes franz-go encodes a
// record with and without the header.
func TestHeaderSize(t *testing.T) {
	for _, tt := range []struct {
		name  string
		key   string
		value []byte
	}{
		{name: "empty", key: "", value: nil},
		{name: "provenance of two clusters", key: "kmirror.provenance", value: []byte("MkU3OEVBNTcwNTJENDM2Qg,NzY1OTQ3MjQyNzc1NDQxNw")},
		{name: "a value past one varint byte", key: "kmirror.provenance", value: make([]byte, 200)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			want := recordSize(t, []kgo.RecordHeader{{Key: tt.key, Value: tt.value}}) - recordSize(t, nil)
			if got := HeaderSize(tt.key, tt.value); got != want {
				t.Errorf("HeaderSize = %d, the record grows by %d", got, want)
			}
			if got := HeaderSize(tt.key, tt.value); got > ProvenanceHeaderMaxBytes && tt.name != "empty" && len(tt.value) < 900 {
				t.Errorf("HeaderSize = %d, more than ProvenanceHeaderMaxBytes", got)
			}
		})
	}
}

// recordSize is the size of a record with headers as kmsg encodes it in
// a v2 batch, its length varint left at 0.
func recordSize(t *testing.T, headers []kgo.RecordHeader) int {
	t.Helper()
	r := kmsg.Record{Key: []byte("k"), Value: make([]byte, 1000)}
	for _, h := range headers {
		r.Headers = append(r.Headers, kmsg.Header{Key: h.Key, Value: h.Value})
	}
	return len(r.AppendTo(nil))
}

func TestMaxMessageHeadroom(t *testing.T) {
	for _, tt := range []struct {
		source int64
		want   int64
	}{
		{source: 1, want: 1024 + 16 + 15 + 4},
		{source: 1048588, want: 1024 + 16 + 15 + 4*17}, // the broker default message.max.bytes
		{source: 64 << 10, want: 1024 + 16 + 15 + 4},
		{source: 100 << 20, want: 1024 + 16 + 15 + 4*1600},
	} {
		if got := MaxMessageHeadroom(tt.source); got != tt.want {
			t.Errorf("MaxMessageHeadroom(%d) = %d, want %d", tt.source, got, tt.want)
		}
	}
}

func TestWithHeadroom(t *testing.T) {
	def := strconv.FormatInt(1048588+MaxMessageHeadroom(1048588), 10)
	for _, tt := range []struct {
		name      string
		desired   map[string]string
		sourceMax string
		target    map[string]string
		keep      bool
		want      string // max.message.bytes wanted; "" for none
	}{
		{name: "broker default on the source", sourceMax: "1048588", want: def},
		{name: "explicit on the source", desired: map[string]string{"max.message.bytes": "2000000"}, sourceMax: "2000000",
			want: strconv.FormatInt(2000000+MaxMessageHeadroom(2000000), 10)},
		{name: "target already has room: in step", sourceMax: "1048588", target: map[string]string{"max.message.bytes": def}, want: def},
		{name: "target raised by hand: kept", sourceMax: "1048588", target: map[string]string{"max.message.bytes": "5000000"}, want: "5000000"},
		{name: "target at the source's value: raised", sourceMax: "1048588", target: map[string]string{"max.message.bytes": "1048588"}, want: def},
		{name: "excluded or overridden: left alone", desired: map[string]string{"max.message.bytes": "777"}, sourceMax: "1048588", keep: true, want: "777"},
		{name: "unknown source value", sourceMax: "", want: ""},
		{name: "near the int32 limit", sourceMax: "2147483000", want: "2147483647"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := map[string]string{"retention.ms": "1"}
			for k, v := range tt.desired {
				in[k] = v
			}
			got := WithHeadroom(in, tt.sourceMax, tt.target, tt.keep, false)
			if got[MaxMessageBytesKey] != tt.want {
				t.Errorf("max.message.bytes = %q, want %q", got[MaxMessageBytesKey], tt.want)
			}
			if got["retention.ms"] != "1" {
				t.Errorf("other configs lost: %v", got)
			}
			if _, set := tt.desired[MaxMessageBytesKey]; !set && !tt.keep {
				if _, changed := in[MaxMessageBytesKey]; changed {
					t.Errorf("desired was changed in place")
				}
			}
		})
	}
}

// TestSyncGivesProvenanceRoom checks that a Syncer with provenance creates
// target topics with room for the header, keeps them in step without
// changing them again, raises an existing target topic that has none,
// keeps a larger value set by hand, and leaves max.message.bytes alone
// when topic_config_exclude names it.
func TestSyncGivesProvenanceRoom(t *testing.T) {
	e := newEnv(t)
	e.create(t, e.srcOp, "big", 1, map[string]*string{"max.message.bytes": kadm.StringPtr("2000000")})
	e.create(t, e.srcOp, "old", 1, map[string]*string{"max.message.bytes": kadm.StringPtr("3000000")})
	e.create(t, e.dstOp, "old", 1, map[string]*string{"max.message.bytes": kadm.StringPtr("3000000")})
	e.create(t, e.srcOp, "tuned", 1, map[string]*string{"max.message.bytes": kadm.StringPtr("1000000")})
	e.create(t, e.dstOp, "tuned", 1, map[string]*string{"max.message.bytes": kadm.StringPtr("9000000")})
	s := e.syncer(t, "    topic_naming: identity\n").WithProvenance(true)
	res := e.syncUntil(t, s, "with every topic ready", func(r Result) bool { return len(r.Ready) == 3 })
	want := map[string]string{
		"big":   strconv.FormatInt(2000000+MaxMessageHeadroom(2000000), 10),
		"old":   strconv.FormatInt(3000000+MaxMessageHeadroom(3000000), 10),
		"tuned": "9000000",
	}
	for topic, v := range want {
		if got := e.dynamicConfigs(t, e.dstOp, topic)["max.message.bytes"]; got != v {
			t.Errorf("target %s: max.message.bytes = %q, want %q", topic, got, v)
		}
		n, _ := strconv.Atoi(v)
		if got := res.MaxMessageBytes[topic]; got != int32(n) && topic != "old" {
			t.Errorf("Result.MaxMessageBytes[%s] = %d, want %d", topic, got, n)
		}
	}
	for range 3 {
		r := e.sync(t, s)
		if len(r.ConfigUpdated) != 0 {
			t.Fatalf("a later pass changed %v: the headroom flaps", r.ConfigUpdated)
		}
		if n, _ := strconv.Atoi(want["old"]); r.MaxMessageBytes["old"] != int32(n) {
			t.Errorf("Result.MaxMessageBytes[old] = %d, want %d", r.MaxMessageBytes["old"], n)
		}
	}

	// Excluded: the target topic gets the source's value, as without
	// provenance.
	e2 := newEnv(t)
	e2.create(t, e2.srcOp, "big", 1, map[string]*string{"max.message.bytes": kadm.StringPtr("2000000")})
	s2 := e2.syncer(t, "    topic_naming: identity\n    topic_config_exclude: [\"max\\\\.message\\\\.bytes\"]\n").WithProvenance(true)
	e2.syncUntil(t, s2, "with the topic ready", func(r Result) bool { return len(r.Ready) == 1 })
	if got := e2.dynamicConfigs(t, e2.dstOp, "big")["max.message.bytes"]; got != "" {
		t.Errorf("excluded max.message.bytes set to %q on the target", got)
	}
}

// Two flows with provenance in opposite directions (active-active) each
// follow the other's topic: the limits settle after one raise instead of
// growing on every pass.
func TestWithHeadroomActiveActiveSettles(t *testing.T) {
	for _, start := range []int64{1048588, 2_000_000, 100, 65536 * 7} {
		a := map[string]string{MaxMessageBytesKey: strconv.FormatInt(start, 10)}
		var b map[string]string // created by a-to-b
		for pass := range 5 {
			b = WithHeadroom(map[string]string{}, a[MaxMessageBytesKey], b, false, true) // a-to-b
			a = WithHeadroom(map[string]string{}, b[MaxMessageBytesKey], a, false, true) // b-to-a
			if pass == 0 {
				continue
			}
			want := strconv.FormatInt(start+MaxMessageHeadroom(start), 10)
			if a[MaxMessageBytesKey] != want || b[MaxMessageBytesKey] != want {
				t.Fatalf("start %d, pass %d: a %s, b %s; want both %s", start, pass, a[MaxMessageBytesKey], b[MaxMessageBytesKey], want)
			}
		}
	}
}
