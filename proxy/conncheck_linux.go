package proxy

import (
	"errors"
	"syscall"
)

// alive reports whether an idle connection is still open: a peek that must
// not block finds nothing to read. Data (an unsolicited response, a TLS
// alert) or EOF means the server is done with it.
func (pc *h1conn) alive() bool {
	if pc.br.Buffered() > 0 {
		return false
	}
	sc, ok := pc.raw.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = errors.Is(err, syscall.EAGAIN)
		return true
	})
	return err == nil && alive
}
