//go:build !linux

package proxy

// alive cannot peek without blocking here; a stale connection is caught by
// the retry of idempotent requests instead.
func (pc *h1conn) alive() bool { return pc.br.Buffered() == 0 }
