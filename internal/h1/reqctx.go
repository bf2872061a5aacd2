package h1

import (
	"context"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// What Server and Transport share to end a request's I/O cheaply: the
// request's context with its one-function slot, the watch that poisons an
// upstream connection through it, and read deadlines that move only when
// they must.

// requestContext is the context of a request on Server: one allocation,
// where context.WithCancel costs three and more work to end
// (bench/README.md). The server ends it itself
// (handler returned, app gone, server closed) rather than deriving it from
// a per-connection context. It carries no values and no deadline, as
// before: a context.Background that the server can cancel.
//
// Besides context.Context it has two ways to learn of the end without a
// goroutine: AfterFunc, which the context package uses for the contexts
// and functions derived from this one, and a one-function slot that
// Transport uses in place of context.AfterFunc, which costs several
// allocations and locks per request.
type requestContext struct {
	ended atomic.Bool
	// onEnd, when set, is called once when the context ends, on whichever
	// goroutine ends it: the connection's, the watcher's, or Close's with
	// the server's lock held. So it must be quick and must not block
	// (Transport's sets a deadline).
	onEnd atomic.Pointer[func()]

	mu     sync.Mutex
	done   chan struct{} // made by the first Done: most requests never ask
	afters []*afterFunc  // AfterFunc's, until the end
	// spare is an empty header map of the server connection's, lent to
	// the request for its answer (spareHeader).
	spare http.Header
}

// afterFunc is one AfterFunc registration; its address tells it from
// another of the same function.
type afterFunc struct{ f func() }

func newRequestContext() *requestContext { return &requestContext{} }

func (ctx *requestContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (ctx *requestContext) Value(any) any               { return nil }
func (ctx *requestContext) String() string              { return "h1.requestContext" }

func (ctx *requestContext) Err() error {
	if ctx.ended.Load() {
		return context.Canceled
	}
	return nil
}

func (ctx *requestContext) Done() <-chan struct{} {
	ctx.mu.Lock()
	defer ctx.mu.Unlock()
	if ctx.done == nil {
		ctx.done = make(chan struct{})
		if ctx.ended.Load() {
			close(ctx.done)
		}
	}
	return ctx.done
}

// AfterFunc calls f in its own goroutine once ctx ends, as
// context.AfterFunc does; the context package calls it for every context
// derived from ctx (context.WithCancel and the like), which would
// otherwise each start a goroutine to wait for Done.
func (ctx *requestContext) AfterFunc(f func()) (stop func() bool) {
	ctx.mu.Lock()
	defer ctx.mu.Unlock()
	if ctx.ended.Load() {
		go f()
		return func() bool { return false }
	}
	a := &afterFunc{f: f}
	ctx.afters = append(ctx.afters, a)
	return func() bool {
		ctx.mu.Lock()
		defer ctx.mu.Unlock()
		i := slices.Index(ctx.afters, a)
		if i < 0 {
			return false // ended: f has been started
		}
		ctx.afters = slices.Delete(ctx.afters, i, i+1)
		return true
	}
}

// end ends ctx; ending it again does nothing.
func (ctx *requestContext) end() {
	if !ctx.ended.Load() {
		ctx.mu.Lock()
		if !ctx.ended.Load() {
			ctx.ended.Store(true)
			if ctx.done != nil {
				close(ctx.done)
			}
			for _, a := range ctx.afters {
				go a.f()
			}
			ctx.afters = nil
		}
		ctx.mu.Unlock()
	}
	// The end is visible before the slot is looked at: see setOnEnd.
	if f := ctx.onEnd.Swap(nil); f != nil {
		(*f)()
	}
}

// setOnEnd arranges for f to be called when ctx ends, until
// clearOnEnd(f). It reports false if the slot is taken; if ctx has
// already ended, f is called before setOnEnd returns.
func (ctx *requestContext) setOnEnd(f *func()) bool {
	if !ctx.onEnd.CompareAndSwap(nil, f) {
		return false
	}
	// end cancels before it looks at the slot: either it finds f there, or
	// the cancellation is visible here.
	if ctx.Err() != nil && ctx.onEnd.CompareAndSwap(f, nil) {
		(*f)()
	}
	return true
}

// clearOnEnd undoes setOnEnd(f); false means ctx ended first and f was
// (or is being) called.
func (ctx *requestContext) clearOnEnd(f *func()) bool {
	return ctx.onEnd.CompareAndSwap(f, nil)
}

// spareHeader takes the empty header map that the server connection of
// ctx lends its request, for Transport to read the answer's header into:
// a handler that gives that header to its own answer (AdoptHeader) gives
// the map back, and the connection lends it again with its next request,
// instead of a map made for each answer. Nil if ctx is no server's, or its
// map is taken.
func spareHeader(ctx context.Context) http.Header {
	rc, ok := ctx.(*requestContext)
	if !ok {
		return nil
	}
	rc.mu.Lock()
	h := rc.spare
	rc.spare = nil
	rc.mu.Unlock()
	return h
}

// cancelWatch poisons a connection when a request's context ends, until
// released.
type cancelWatch struct {
	pc   *h1conn
	ctx  *requestContext // Server's: its slot costs no allocation
	stop func() bool     // otherwise context.AfterFunc's
}

func watchCancel(ctx context.Context, pc *h1conn) cancelWatch {
	if rc, ok := ctx.(*requestContext); ok && rc.setOnEnd(&pc.poison) {
		return cancelWatch{pc: pc, ctx: rc}
	}
	return cancelWatch{pc: pc, stop: context.AfterFunc(ctx, pc.poison)}
}

// release ends the watch; false means the context ended first and the
// connection was (or is being) poisoned.
func (w cancelWatch) release() bool {
	if w.ctx != nil {
		return w.ctx.clearOnEnd(&w.pc.poison)
	}
	return w.stop()
}

// readDeadline is a connection's read deadline as last set. Setting one
// updates a runtime timer under a lock, a few percent of a small request's
// cost; a deadline that only guards against a stalled peer need not move
// for every request.
//
// set and extend report whether they moved the deadline: a move undoes a
// poisoning (cancelWatch) that came before it, so Transport checks its
// request's context after one.
type readDeadline struct{ at time.Time }

func (d *readDeadline) set(conn net.Conn, at time.Time) bool {
	if at.Equal(d.at) {
		return false
	}
	conn.SetReadDeadline(at)
	d.at = at
	return true
}

// extend sets the deadline to at, unless the one set is at most a
// sixteenth of timeout (and at most a second) earlier: a timeout of 90 s
// then ends between 89 and 90 s of waiting.
func (d *readDeadline) extend(conn net.Conn, at time.Time, timeout time.Duration) bool {
	if early := at.Sub(d.at); !d.at.IsZero() && early >= 0 && early <= min(timeout/16, time.Second) {
		return false
	}
	return d.set(conn, at)
}

// stallWriter writes to a connection, ending a write that makes no
// progress for timeout. The deadline is moved only when it is more than a
// sixteenth of timeout (at most a second) behind: a write then has between
// timeout less that and timeout to make progress, at the cost of a clock
// read per write rather than a deadline change.
type stallWriter struct {
	conn     net.Conn
	timeout  time.Duration
	deadline time.Time
}

func (w *stallWriter) Write(p []byte) (int, error) {
	written := 0
	for {
		if at := time.Now().Add(w.timeout); at.Sub(w.deadline) > min(w.timeout/16, time.Second) {
			w.conn.SetWriteDeadline(at)
			w.deadline = at
		}
		n, err := w.conn.Write(p[written:])
		written += n
		if err == nil || n == 0 {
			return written, err
		}
		if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			return written, err
		}
		// Progress, then the deadline: the app is reading, slowly.
	}
}
