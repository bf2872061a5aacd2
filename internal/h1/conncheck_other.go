//go:build !linux

package h1

import "net"

// alive cannot peek without blocking here; a stale connection is caught by
// the retry of idempotent requests instead.
func (pc *h1conn) alive() bool { return pc.br.Buffered() == 0 }

func (pc *h1conn) initPeek() {}

// peerGone cannot peek without blocking here: an app that hangs up is
// noticed when its answer is written.
func peerGone(net.Conn) bool { return false }

// newSysConn is c: the raw reads and writes are Linux's (sysconn_linux.go).
func newSysConn(c net.Conn) net.Conn { return c }
