package tunnel

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Relay copies bytes both ways between client and the passthrough host
// that Open dialled, on goroutines of its own, until both directions end,
// the tunnel idles, or Close; then it releases s.
func (s *Slot) Relay(client net.Conn) {
	t := s.t
	if s.server == nil || !t.track(s, client, s.server) {
		client.Close() // shutting down, or not a passthrough slot
		s.Release()
		return
	}
	r := &relay{client: client, server: s.server, idle: t.idle, halfClose: t.halfClose}
	r.touch()
	go func() {
		defer s.Release()
		errs := make(chan error, 1)
		go func() { errs <- r.pipe(r.client, r.server) }()
		err := r.pipe(r.server, r.client)
		err = errors.Join(err, <-errs)
		r.close()
		if err != nil {
			t.log.Debug("passthrough tunnel ended", zap.String("host", r.server.RemoteAddr().String()), zap.Error(err))
		}
	}()
}

// relay is one passthrough tunnel.
type relay struct {
	client, server  net.Conn
	idle, halfClose time.Duration
	last            atomic.Int64 // Unix nanoseconds of the last byte either way
	// halfClosed is set once one side has closed: from then on the other
	// has halfClose, not idle, to send something.
	halfClosed atomic.Bool
	closeOnce  sync.Once
}

func (r *relay) touch() { r.last.Store(time.Now().UnixNano()) }

func (r *relay) close() {
	r.closeOnce.Do(func() {
		r.client.Close()
		r.server.Close()
	})
}

// timeout is how long src may now stay silent.
func (r *relay) timeout() time.Duration {
	if r.halfClosed.Load() {
		return r.halfClose
	}
	return r.idle
}

// pipe copies src to dst. At src's end of stream it half-closes dst, so
// the other direction may go on (a client that shuts down its writing side
// still reads the answer), for as long as that direction keeps sending;
// on an error, or a timeout, it closes both.
func (r *relay) pipe(dst, src net.Conn) error {
	// A TLS record's worth: the bytes relayed are TLS records.
	buf := make([]byte, 16<<10)
	for {
		half := r.halfClosed.Load()
		src.SetReadDeadline(time.Now().Add(r.timeout()))
		if !half && r.halfClosed.Load() {
			// The other direction ended between the two loads: its shorter
			// deadline may have been overwritten by ours.
			src.SetReadDeadline(time.Now().Add(r.halfClose))
		}
		n, err := src.Read(buf)
		if n > 0 {
			r.touch()
			dst.SetWriteDeadline(time.Now().Add(r.idle))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				r.close()
				return werr
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			if r.halfClosed.Swap(true) {
				r.close() // both sides have closed
				return nil
			}
			if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
				// The other side now has halfClose to speak: wake its reader
				// from the idle deadline it waits on.
				dst.SetReadDeadline(time.Now().Add(r.halfClose))
				return nil
			}
			r.close()
			return nil
		case errors.Is(err, net.ErrClosed):
			return nil
		default:
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() && !r.halfClosed.Load() &&
				time.Since(time.Unix(0, r.last.Load())) < r.idle {
				continue // the other direction is busy
			}
			r.close()
			return err
		}
	}
}
