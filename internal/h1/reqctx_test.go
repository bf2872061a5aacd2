package h1

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

// The slot that Transport uses in place of context.AfterFunc keeps
// AfterFunc's promise: the function runs once if the context ends before
// the slot is cleared, never after, and clearing says which happened.
func TestRequestContextOnEnd(t *testing.T) {
	for _, tc := range []struct {
		name       string
		run        func(ctx *requestContext, f *func()) (cleared bool)
		calls      int
		wantCleard bool
	}{
		{"ended while set", func(ctx *requestContext, f *func()) bool {
			ctx.setOnEnd(f)
			ctx.end()
			ctx.end()
			return ctx.clearOnEnd(f)
		}, 1, false},
		{"cleared before the end", func(ctx *requestContext, f *func()) bool {
			ctx.setOnEnd(f)
			cleared := ctx.clearOnEnd(f)
			ctx.end()
			return cleared
		}, 0, true},
		{"set after the end", func(ctx *requestContext, f *func()) bool {
			ctx.end()
			ctx.setOnEnd(f)
			return ctx.clearOnEnd(f)
		}, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := newRequestContext()
			calls := 0
			f := func() { calls++ }
			if cleared := tc.run(ctx, &f); cleared != tc.wantCleard || calls != tc.calls {
				t.Errorf("cleared %v after %d calls, want %v after %d", cleared, calls, tc.wantCleard, tc.calls)
			}
			if !errors.Is(ctx.Err(), context.Canceled) {
				t.Errorf("Err after end: %v", ctx.Err())
			}
		})
	}
}

func TestRequestContextOnEndHasOneSlot(t *testing.T) {
	ctx := newRequestContext()
	f, g := func() {}, func() {}
	if !ctx.setOnEnd(&f) || ctx.setOnEnd(&g) {
		t.Fatal("a second function took the slot")
	}
	if ctx.clearOnEnd(&g) || !ctx.clearOnEnd(&f) {
		t.Error("clearing another's function, or one's own, went wrong")
	}
}

func TestRequestContextOnEndRacingTheEnd(t *testing.T) {
	for range 1000 {
		ctx := newRequestContext()
		var calls atomic.Int32
		f := func() { calls.Add(1) }
		var wg sync.WaitGroup
		wg.Go(ctx.end)
		ctx.setOnEnd(&f)
		cleared := ctx.clearOnEnd(&f)
		wg.Wait()
		if n := calls.Load(); cleared && n != 0 || !cleared && n != 1 {
			t.Fatalf("cleared %v and %d calls: want cleared with none, or one call", cleared, n)
		}
	}
}
