package flow

import (
	"reflect"
	"testing"
)

func TestStuckSet(t *testing.T) {
	type add struct {
		topic  string
		parts  []int32
		reason string
	}
	for _, tc := range []struct {
		name string
		adds []add
		want []Stuck
	}{
		{"none", nil, []Stuck{}},
		{"partitions merge and sort", []add{{"a", []int32{2}, "no leader"}, {"a", []int32{0, 2}, "offsets"}},
			[]Stuck{{Topic: "a", Partitions: []int32{0, 2}, Reason: "no leader"}}},
		{"whole topic wins", []add{{"a", []int32{1}, "no leader"}, {"a", nil, "target not creatable"}, {"a", []int32{3}, "x"}},
			[]Stuck{{Topic: "a", Reason: "target not creatable"}}},
		{"sorted by topic", []add{{"b", nil, "r"}, {"a", []int32{0}, "r"}},
			[]Stuck{{Topic: "a", Partitions: []int32{0}, Reason: "r"}, {Topic: "b", Reason: "r"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStuckSet()
			for _, a := range tc.adds {
				s.add(a.topic, a.parts, a.reason)
			}
			if got := s.list(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("list() = %+v, want %+v", got, tc.want)
			}
		})
	}
}
