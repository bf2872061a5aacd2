package h1

import (
	"errors"
	"net"
	"syscall"
	"unsafe"
)

// alive reports whether an idle connection is still open and silent: a
// peek that must not block finds nothing to read. Data (an unsolicited
// response, a TLS alert) or EOF means the server is done with it.
//
// It runs before every reuse, so it allocates nothing: the raw connection
// and the function given to Control are made once per connection.
func (pc *h1conn) alive() bool {
	if pc.br.Buffered() > 0 {
		return false
	}
	if pc.rawConn == nil {
		return true // not a socket (tests' pipes)
	}
	pc.peekIdle = false
	if err := pc.rawConn.Control(pc.peekFD); err != nil {
		return false // closed
	}
	return pc.peekIdle
}

// initPeek prepares alive's peek for a new connection.
func (pc *h1conn) initPeek() {
	sc, ok := pc.raw.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	pc.rawConn = rc
	pc.peekFD = func(fd uintptr) {
		// syscall.Recvfrom would allocate the sender's address.
		_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&pc.peekByte)), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		pc.peekIdle = errno == syscall.EAGAIN
	}
}

// peerGone reports whether the app has closed or reset conn, which must
// have nothing left to read: a peek that must not block finds EOF or an
// error.
func peerGone(conn net.Conn) bool {
	n, err := peek(conn)
	if errors.Is(err, errCannotPeek) || errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
		return false
	}
	return n == 0 || err != nil // EOF, or a reset
}

// errCannotPeek is for connections that are not sockets (tests' pipes):
// they count as alive.
var errCannotPeek = errors.New("not a socket")

// peek receives one byte of conn's socket without taking it off the queue
// or waiting. It goes through Control, which neither takes the read lock
// (the hang-up check runs beside the connection's own goroutine) nor heeds
// the read deadline (a pooled connection may keep an expired one).
func peek(conn net.Conn) (n int, err error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return 0, errCannotPeek
	}
	rc, cerr := sc.SyscallConn()
	if cerr != nil {
		return 0, cerr // closed
	}
	cerr = rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	})
	if cerr != nil {
		return 0, cerr
	}
	return n, err
}
