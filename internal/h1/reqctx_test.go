package h1

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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

// The request's context is a whole context.Context: its Done and Err follow
// the end, and what is derived from it (context.WithCancel, WithTimeout,
// AfterFunc) ends with it, registered through its AfterFunc rather than
// through a goroutine of the context package's waiting on Done.
func TestRequestContextIsAContext(t *testing.T) {
	ctx := newRequestContext()
	if ctx.Err() != nil {
		t.Fatalf("Err before the end: %v", ctx.Err())
	}
	select {
	case <-ctx.Done():
		t.Fatal("Done closed before the end")
	default:
	}
	if _, ok := ctx.Deadline(); ok || ctx.Value("any key") != nil {
		t.Error("a deadline or a value where there is none")
	}

	dropped, cancelDropped := context.WithCancel(ctx)
	if len(ctx.afters) != 1 {
		t.Fatalf("WithCancel registered %d functions, want 1: the context package waits in a goroutine instead", len(ctx.afters))
	}
	cancelDropped()
	if len(ctx.afters) != 0 {
		t.Fatalf("%d functions left registered after the derived context's cancel", len(ctx.afters))
	}
	if !errors.Is(dropped.Err(), context.Canceled) {
		t.Fatalf("the derived context's Err after its cancel: %v", dropped.Err())
	}

	child, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	called := make(chan struct{})
	context.AfterFunc(ctx, func() { close(called) })
	never := func() { t.Error("a stopped AfterFunc ran") }
	if stop := ctx.AfterFunc(never); !stop() || stop() {
		t.Error("stop before the end: want true once, then false")
	}
	if len(ctx.afters) != 2 {
		t.Fatalf("%d functions registered, want the derived context's and AfterFunc's", len(ctx.afters))
	}

	ctx.end()
	<-ctx.Done()
	<-child.Done()
	<-called
	for name, err := range map[string]error{
		"Err":           ctx.Err(),
		"Cause":         context.Cause(ctx),
		"the child Err": child.Err(),
	} {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s after the end: %v, want context.Canceled", name, err)
		}
	}

	late := newRequestContext()
	late.end()
	<-late.Done() // made after the end: closed already
	ran := make(chan struct{})
	if stop := late.AfterFunc(func() { close(ran) }); stop() {
		t.Error("stop after the end reported that it stopped the function")
	}
	<-ran
}

// Every function registered while the context ends runs exactly once,
// whichever of the registration and the end comes first.
func TestRequestContextAfterFuncRacingTheEnd(t *testing.T) {
	for range 200 {
		ctx := newRequestContext()
		var ran sync.WaitGroup
		ran.Add(3)
		var wg sync.WaitGroup
		wg.Go(ctx.end)
		for range 3 {
			wg.Go(func() { ctx.AfterFunc(ran.Done) })
		}
		done := ctx.Done()
		wg.Wait()
		ran.Wait() // a function never called hangs here; one called twice panics
		<-done
	}
}
