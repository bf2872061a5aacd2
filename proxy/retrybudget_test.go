package proxy

import (
	"testing"
	"time"
)

func TestRetryBudget(t *testing.T) {
	clock := &handClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	b := newRetryBudget(clock)
	// Fewer than 15 requests: at least 3 retries.
	for range 5 {
		b.request(clock.Now())
	}
	for i := range 4 {
		if got, want := b.take(), i < 3; got != want {
			t.Fatalf("retry %d with 5 requests: %v, want %v", i+1, got, want)
		}
	}
	// 50 requests in all: a fifth is 10, 3 taken already.
	for range 45 {
		b.request(clock.Now())
	}
	for i := range 8 {
		if got, want := b.take(), i < 7; got != want {
			t.Fatalf("retry %d more with 50 requests: %v, want %v", i+1, got, want)
		}
	}
	// The window slides: 9 s on, the same count; 10 s on, all of it is
	// out of the window and the minimum is back.
	clock.now = clock.now.Add(9 * time.Second)
	if b.take() {
		t.Error("9 s later: a retry beyond the budget was allowed")
	}
	clock.now = clock.now.Add(time.Second)
	for i := range 4 {
		if got, want := b.take(), i < 3; got != want {
			t.Fatalf("10 s later, retry %d: %v, want %v", i+1, got, want)
		}
	}
}
