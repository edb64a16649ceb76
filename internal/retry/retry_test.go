package retry

import (
	"context"
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Base: 500 * time.Millisecond, Max: 30 * time.Second}
	tests := []struct {
		failures int
		want     time.Duration
	}{
		{1, 500 * time.Millisecond},
		{2, time.Second},
		{3, 2 * time.Second},
		{7, 30 * time.Second},
		{100, 30 * time.Second},
	}
	for _, tc := range tests {
		if got := b.Delay(tc.failures); got != tc.want {
			t.Errorf("Delay(%d) = %v, want %v", tc.failures, got, tc.want)
		}
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep on an ended context reported the full wait")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep of 1ms did not complete")
	}
}

func TestUntil(t *testing.T) {
	n := 0
	if !Until(context.Background(), time.Millisecond, time.Second, func() bool { n++; return n == 3 }) {
		t.Fatal("Until gave up before the condition held")
	}
	if Until(context.Background(), time.Millisecond, 20*time.Millisecond, func() bool { return false }) {
		t.Fatal("Until reported a condition that never held")
	}
}

func TestThrottle(t *testing.T) {
	th := Throttle{Every: time.Hour}
	if !th.Allow() {
		t.Fatal("first event held back")
	}
	if th.Allow() {
		t.Fatal("second event within the interval let through")
	}
	th = Throttle{Every: time.Nanosecond}
	th.Allow()
	time.Sleep(time.Millisecond)
	if !th.Allow() {
		t.Fatal("event after the interval held back")
	}
}
