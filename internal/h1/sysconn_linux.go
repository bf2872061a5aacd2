package h1

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// sysConn is a TCP connection whose reads and writes are made as raw
// system calls on its non-blocking descriptor, through the netpoller only
// when they would wait (syscall.RawConn's Read and Write, which keep the
// connection's deadlines and its locks against Close).
//
// The standard library's reads and writes tell the scheduler that they
// enter a system call. With one P (the sidecar pinned to a core), the
// runtime's monitor thread then wakes every 20 us, and hands the P to
// another thread whenever a loopback write, which does the receiver's
// work too, spans two of its ticks (more often the busier the core): each
// a context switch on the one core (bench/README.md, "Profile, before and
// after (issue 24)"). A system call on a non-blocking socket does not
// block, so nothing needs the P meanwhile.
//
// Everything but Read and Write (deadlines, CloseWrite, addresses, Close,
// and ReadFrom and WriteTo, which io.Copy would use) is the TCP
// connection's own.
type sysConn struct {
	*net.TCPConn
	rc syscall.RawConn
	// The functions given to rc, and their arguments and results, made
	// once per connection so that a read or write allocates nothing; the
	// locks keep concurrent reads (or writes) from sharing them.
	rmu, wmu        sync.Mutex
	readFD, writeFD func(fd uintptr) bool
	rbuf, wbuf      []byte
	rn, wn          int
	rerr, werr      syscall.Errno
}

// newSysConn returns c with raw reads and writes, or c itself when it is
// not a TCP connection (tests' pipes and wrappers keep their own I/O).
func newSysConn(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	sc := &sysConn{TCPConn: tc, rc: rc}
	sc.readFD = func(fd uintptr) bool {
		for {
			n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&sc.rbuf[0])), uintptr(len(sc.rbuf)))
			switch errno {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // wait in the netpoller, then try again
			}
			sc.rn, sc.rerr = int(n), errno
			return true
		}
	}
	sc.writeFD = func(fd uintptr) bool {
		for sc.wn < len(sc.wbuf) {
			p := sc.wbuf[sc.wn:]
			n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch errno {
			case 0:
				sc.wn += int(n)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				sc.werr = errno
				return true
			}
		}
		return true
	}
	return sc
}

func (c *sysConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	// As net's: no single read beyond what the kernel takes at once.
	if len(p) > 1<<30 {
		p = p[:1<<30]
	}
	c.rmu.Lock()
	c.rbuf, c.rn, c.rerr = p, 0, 0
	err := c.rc.Read(c.readFD)
	n, errno := c.rn, c.rerr
	c.rbuf = nil
	c.rmu.Unlock()
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *sysConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	c.wbuf, c.wn, c.werr = p, 0, 0
	err := c.rc.Write(c.writeFD)
	n, errno := c.wn, c.werr
	c.wbuf = nil
	c.wmu.Unlock()
	switch {
	case err != nil:
		return n, c.opError("write", err)
	case errno != 0:
		return n, c.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

// opError reports err as net.Conn's Read and Write do, so that callers
// that classify errors by their operation (a read that timed out, a reset)
// see no difference; RawConn's own errors say "raw-read" and "raw-write".
func (c *sysConn) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
