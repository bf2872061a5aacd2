package h1

import (
	"io"
	"net/http"
	"sync"
	"time"
)

// limitReader bounds what a message's line and headers may read, and
// keeps a copy of what it reads while rec is set.
type limitReader struct {
	r      io.Reader
	remain int64
	rec    *[]byte
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.remain <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.remain {
		p = p[:l.remain]
	}
	n, err := l.r.Read(p)
	l.remain -= int64(n)
	if l.rec != nil {
		*l.rec = append(*l.rec, p[:n]...)
	}
	return n, err
}

// serverBody is a request body as the handler sees it. Its lock lets the
// connection take the body back from a reader on another goroutine (net/
// http's transport writes request bodies from one of its own) before the
// next request is parsed from the same buffer.
type serverBody struct {
	mu           sync.Mutex
	rc           io.ReadCloser
	c            *serverConn
	res          *response
	length       int64 // -1 when chunked
	read         int64
	needContinue bool
	complete     bool // read to its end: the next request starts after it
	closed       bool
}

func (b *serverBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.needContinue {
		b.needContinue = false
		b.res.sendContinue()
	}
	n, err := b.rc.Read(p)
	b.read += int64(n)
	if err == io.EOF || b.read == b.length {
		b.complete = true
		b.c.watched.Store(b.c.br.Buffered() == 0)
	}
	return n, err
}

// buffered reports how much of the body has arrived and waits in the
// connection's buffer. A chunked body (its framing is in the way) reports
// none.
func (b *serverBody) Buffered() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.length < 0 {
		return 0
	}
	return min(int64(b.c.br.Buffered()), b.length-b.read)
}

// Close makes later reads fail; what was not read stays unread, and the
// connection closes after the answer.
func (b *serverBody) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

// maxDrain is how much of a request body the handler left unread is read
// and dropped so that the connection can serve the next request
// (net/http's maxPostHandlerReadBytes); more costs a new connection.
const maxDrain = 256 << 10

// closeForReuse ends the body for the handler and reports whether the
// connection can read the next request: the body was read to its end, or
// its small rest could be dropped, and no reader is still at it.
func (b *serverBody) closeForReuse() bool {
	if !b.mu.TryLock() {
		return false // a read is blocked on the app: the connection must go
	}
	defer b.mu.Unlock()
	b.closed = true
	if b.complete {
		return true
	}
	if !b.drainable() {
		return false
	}
	// A stalled app must not hold the connection: the drain gets as long
	// as a request's headers do.
	if d := b.c.s.ReadHeaderTimeout; d > 0 {
		b.c.deadline.set(b.c.rwc, time.Now().Add(d))
	}
	_, err := io.CopyN(io.Discard, b.rc, maxDrain)
	return err == io.EOF
}

// drainable reports whether the unread rest of the body is worth dropping
// to keep the connection: not when the app waits for a 100 Continue before
// sending it, nor when it is known to be large.
func (b *serverBody) drainable() bool {
	return !b.needContinue && (b.length < 0 || b.length-b.read <= maxDrain)
}

// reusable reports, without waiting, whether the connection may serve
// another request after this body: read to its end, or drainable.
func (b *serverBody) reusable() bool {
	if !b.mu.TryLock() {
		return false
	}
	defer b.mu.Unlock()
	return b.complete || b.drainable()
}
