package tunnel

import (
	"errors"
	"net"
	"sync"
)

// Serve prepares conn with setup (nil: none) on a goroutine of its own,
// and then feeds it to the server accepting on Listener, which owns it
// from then on; s is released when the server, or a failed setup, closes
// it. setup must bound its own time (a TLS handshake's deadline): until
// it returns, Close is the only other way it ends.
func (s *Slot) Serve(conn net.Conn, setup func(net.Conn) (net.Conn, error)) {
	t := s.t
	c := &slotConn{Conn: conn, slot: s}
	if !t.track(s, c) {
		c.Close() // shutting down
		return
	}
	go func() {
		sc := net.Conn(c)
		if setup != nil {
			var err error
			if sc, err = setup(c); err != nil {
				t.untrack(s)
				c.Close()
				return
			}
		}
		t.untrack(s) // the server's from here on
		if !t.ln.hand(sc) {
			sc.Close() // shutting down
		}
	}()
}

// slotConn is a tunnelled connection that gives its slot back when
// closed.
type slotConn struct {
	net.Conn
	slot *Slot
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.slot.Release()
	return err
}

// CloseWrite passes a half-close on.
func (c *slotConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// listener is a net.Listener whose connections are the insides of the
// tunnels that Serve prepared.
type listener struct {
	addr      net.Addr
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

func newListener(addr net.Addr) *listener {
	if addr == nil {
		addr = placeholder{}
	}
	return &listener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// Accept waits for the next tunnel.
func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close makes Accept fail and Serve close what it prepares from now on.
// Tunnels already accepted are their server's to close.
func (l *listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *listener) Addr() net.Addr { return l.addr }

// hand gives c to the server; false means the listener is closed and c is
// the caller's to close.
func (l *listener) hand(c net.Conn) bool {
	select {
	case <-l.closed:
		return false
	default:
	}
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

// placeholder is the listener's address when none is given.
type placeholder struct{}

func (placeholder) Network() string { return "tunnel" }
func (placeholder) String() string  { return "tunnel" }
