package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
)

// Server is what the Handler needs of the servers it runs (Config.NewServer):
// http.Server and h1.Server.
type Server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

// Serve serves the app's connections on ln, and the requests inside the
// tunnels they open, until Shutdown or Close; then it returns
// http.ErrServerClosed, as a server does.
func (h *Handler) Serve(ln net.Listener) error {
	inner := make(chan error, 1)
	go func() { inner <- h.inner.Serve(h.tunnels.Listener()) }()
	err := h.server.Serve(ln)
	if !errors.Is(err, http.ErrServerClosed) {
		// Not stopped by Shutdown or Close: the tunnels stop with it.
		h.inner.Close()
		h.tunnels.Close()
	}
	if ierr := <-inner; !errors.Is(ierr, http.ErrServerClosed) && !errors.Is(ierr, net.ErrClosed) {
		err = errors.Join(err, ierr)
	}
	return err
}

// Shutdown stops accepting, then lets the requests in flight and the open
// tunnels finish: the app's connections first, so that no new tunnel
// opens, then the requests inside tunnels, then the relayed tunnels. When
// ctx ends first, it returns ctx's error; Close then cuts what is left.
func (h *Handler) Shutdown(ctx context.Context) error {
	err := h.server.Shutdown(ctx)
	if ierr := h.inner.Shutdown(ctx); err == nil {
		err = ierr
	}
	if terr := h.tunnels.Shutdown(ctx); err == nil {
		err = terr
	}
	return err
}

// Close closes every connection and tunnel at once.
func (h *Handler) Close() error {
	return errors.Join(h.server.Close(), h.inner.Close(), h.tunnels.Close())
}
