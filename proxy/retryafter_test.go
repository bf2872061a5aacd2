package proxy

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// stoppedClock is a clock that never moves.
type stoppedClock struct{ now time.Time }

func (c stoppedClock) Now() time.Time                                   { return c.now }
func (c stoppedClock) Sleep(ctx context.Context, _ time.Duration) error { return ctx.Err() }

// FuzzRetryAfter checks that any Retry-After from the upstream reads as
// no wait, or a wait that is never negative, and that delay-seconds read
// exactly.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "1", "120", "Sun, 01 Mar 2026 12:00:04 GMT", "Sunday, 01-Mar-26 11:00:00 GMT", "-1", "1.5", "", "99999999999999999999"} {
		f.Add(s)
	}
	clock := stoppedClock{time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := retryAfter(http.Header{"Retry-After": {v}}, clock)
		if !ok {
			return
		}
		if d < 0 {
			t.Fatalf("Retry-After %q: wait %v", v, d)
		}
		if n, err := strconv.ParseUint(v, 10, 32); err == nil && d != time.Duration(n)*time.Second {
			t.Fatalf("Retry-After %q: wait %v, want %ds", v, d, n)
		}
	})
}
