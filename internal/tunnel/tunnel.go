// Package tunnel owns the CONNECT tunnels of dinie-auth-proxy once the
// HTTP side has decided to open one: it counts them against their bound,
// relays the passthrough ones byte for byte, and feeds the others, through
// a net.Listener, to the server that serves the requests inside them.
//
// What it guarantees (docs/security.md, "Tunnels: bounds and edges"):
//   - at most Config.Max tunnels are open at once, of every kind together,
//     from the moment one is asked for until it closes; one more is
//     refused with ErrFull before anything is dialled;
//   - a wildcard passthrough pattern never leads to the machine itself or
//     the network it sits in (wildcardMayReach), decided on the resolved
//     addresses before any dial, and only those addresses are dialled;
//   - a relayed tunnel ends when it has been idle for Config.IdleTimeout,
//     or, once one side has closed, when the other has sent nothing for
//     Config.HalfCloseTimeout;
//   - every goroutine it starts ends with its tunnel, and Close ends them
//     all.
//
// It knows nothing of HTTP or tokens: the bytes it relays are never read,
// and a connection it feeds to the server is prepared (a TLS handshake)
// by a function of the caller's.
package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Kind is what a tunnel carries, the kind label of the open-tunnel gauge.
type Kind int

const (
	// Plain carries plain HTTP to the upstream, served by the tunnels' server.
	Plain Kind = iota
	// Intercepted carries TLS to the upstream, terminated by the proxy and
	// then served as Plain.
	Intercepted
	// Passthrough carries bytes to another host, relayed untouched.
	Passthrough
	kinds
)

func (k Kind) String() string {
	switch k {
	case Plain:
		return "plain"
	case Intercepted:
		return "intercepted"
	case Passthrough:
		return "passthrough"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// The errors of Open, for the caller to tell apart with errors.Is.
var (
	// ErrFull: Config.Max tunnels are open.
	ErrFull = errors.New("tunnel: too many tunnels open")
	// ErrClosed: shutdown has begun.
	ErrClosed = errors.New("tunnel: shutting down")
	// ErrNotAllowed: no pattern lets the tunnel reach that host, or a
	// wildcard matched a name that resolves only to addresses a wildcard may
	// not reach.
	ErrNotAllowed = errors.New("tunnel: host not allowed")
	// ErrUnreachable: the passthrough host could not be resolved or
	// dialled. Its message names the host and port only; the cause is
	// wrapped for the logs.
	ErrUnreachable = errors.New("tunnel: host unreachable")
)

// Config configures Tunnels; zero values pick the defaults their comments
// name.
type Config struct {
	// Passthrough are the patterns of the hosts whose tunnels are relayed
	// untouched (intercept.passthrough; a pattern it cannot read is a PatternError). None means no
	// passthrough tunnel opens.
	Passthrough []string
	// Max bounds the tunnels open at once, of every kind
	// (limits.max_tunnels). Zero means no bound.
	Max int
	// DialTimeout bounds resolving and connecting to a passthrough host.
	// Zero means 10 s.
	DialTimeout time.Duration
	// IdleTimeout ends a relayed tunnel that carried no byte either way for
	// this long, and bounds each write of a relay. Zero means
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// HalfCloseTimeout ends a relayed tunnel one side of which has closed
	// once the other has sent nothing for this long. Zero means 10 s.
	HalfCloseTimeout time.Duration
	// Addr is what the listener reports as its address (the proxy's own).
	// Nil means a placeholder.
	Addr net.Addr
	// Lookup resolves a name a wildcard pattern matched. Nil means the
	// system resolver.
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	// InterfaceAddrs lists the machine's own addresses, which a wildcard
	// never reaches. Nil means net.InterfaceAddrs.
	InterfaceAddrs func() ([]netip.Addr, error)
	// Logger receives a line per relay that ends in an error. Nil means
	// none.
	Logger *zap.Logger
	// Registerer receives dinie_proxy_tunnels_open. Nil means it is not
	// registered.
	Registerer prometheus.Registerer
}

// DefaultIdleTimeout is longer than the idle timeouts of clients'
// keep-alive pools (Go's 90 s, Node's and curl's less) and of common load
// balancers (60-350 s), so a tunnel a client means to reuse is not cut
// under it.
const DefaultIdleTimeout = 5 * time.Minute

// Tunnels owns the open tunnels. Create it with New.
type Tunnels struct {
	hosts     patterns
	dialer    net.Dialer
	lookup    func(ctx context.Context, host string) ([]netip.Addr, error)
	ownAddrs  func() ([]netip.Addr, error)
	idle      time.Duration
	halfClose time.Duration
	log       *zap.Logger
	gauge     *prometheus.GaugeVec
	open      [kinds]prometheus.Gauge
	ln        *listener

	mu      sync.Mutex
	max     int
	count   int
	closing bool
	// live are the tunnels this package still runs (relays, and those
	// being prepared for the server), to close at Close; drained is closed
	// when it empties after Shutdown began.
	live    map[*Slot]struct{}
	drained chan struct{}
}

// New returns Tunnels with none open.
func New(cfg Config) (*Tunnels, error) {
	hosts, err := parsePatterns(cfg.Passthrough)
	if err != nil {
		return nil, &PatternError{Err: err}
	}
	t := &Tunnels{hosts: hosts, lookup: cfg.Lookup, ownAddrs: cfg.InterfaceAddrs, idle: cfg.IdleTimeout,
		halfClose: cfg.HalfCloseTimeout, log: cfg.Logger, max: cfg.Max, live: map[*Slot]struct{}{}}
	t.dialer.Timeout = orDefault(cfg.DialTimeout, 10*time.Second)
	t.idle = orDefault(t.idle, DefaultIdleTimeout)
	t.halfClose = orDefault(t.halfClose, 10*time.Second)
	if t.log == nil {
		t.log = zap.NewNop()
	}
	if t.lookup == nil {
		t.lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	if t.ownAddrs == nil {
		t.ownAddrs = interfaceAddrs
	}
	t.ln = newListener(cfg.Addr)
	if t.gauge, err = newGauge(cfg.Registerer); err != nil {
		return nil, err
	}
	for k := range kinds {
		t.open[k] = t.gauge.WithLabelValues(k.String())
	}
	return t, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func interfaceAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("tunnel: interface addresses: %w", err)
	}
	own := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			own = append(own, p.Addr())
		}
	}
	return own, nil
}

// Passes reports whether a CONNECT to host:port may be relayed untouched:
// a pattern matches it. Open still refuses a wildcard's forbidden
// addresses.
func (t *Tunnels) Passes(host, port string) bool {
	ok, _ := t.hosts.match(host, port)
	return ok
}

// Slot is one open tunnel, counted until Release, or until the tunnel
// that Relay or Serve started ends.
type Slot struct {
	t      *Tunnels
	kind   Kind
	server net.Conn // the passthrough host, dialled by Open
	once   sync.Once
	// conns are closed by Close while this package runs the tunnel.
	mu    sync.Mutex
	conns []net.Conn
}

// Open counts a new tunnel of kind. For Passthrough it also dials
// authority (host:port), which must match a pattern. The errors are
// ErrNotAllowed, ErrFull, ErrClosed and ErrUnreachable, in the order they
// are checked: a host is refused before the bound is looked at, and
// nothing is dialled beyond the bound.
func (t *Tunnels) Open(ctx context.Context, kind Kind, authority string) (*Slot, error) {
	var target []netip.AddrPort
	if kind == Passthrough {
		var err error
		if target, err = t.resolve(ctx, authority); err != nil {
			return nil, err
		}
	}
	t.mu.Lock()
	switch {
	case t.closing:
		t.mu.Unlock()
		return nil, ErrClosed
	case t.max > 0 && t.count >= t.max:
		t.mu.Unlock()
		return nil, ErrFull
	}
	t.count++
	t.mu.Unlock()
	t.open[kind].Inc()
	s := &Slot{t: t, kind: kind}
	if kind == Passthrough {
		conn, err := t.dial(ctx, authority, target)
		if err != nil {
			s.Release()
			return nil, err
		}
		s.server = conn
	}
	return s, nil
}

// Release closes what the tunnel holds and gives its place back. The
// tunnel that Relay or Serve started releases its slot itself.
func (s *Slot) Release() {
	s.once.Do(func() {
		if s.server != nil {
			s.server.Close()
		}
		t := s.t
		t.open[s.kind].Dec()
		t.mu.Lock()
		t.count--
		t.forget(s)
		t.mu.Unlock()
	})
}

// track makes Close close conns while this package runs s; false means
// shutdown has begun, and the caller must release s.
func (t *Tunnels) track(s *Slot, conns ...net.Conn) bool {
	s.mu.Lock()
	s.conns = conns
	s.mu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing {
		return false
	}
	t.live[s] = struct{}{}
	return true
}

// forget stops tracking s; t.mu is held.
func (t *Tunnels) forget(s *Slot) {
	delete(t.live, s)
	if t.drained != nil && len(t.live) == 0 {
		select {
		case <-t.drained:
		default:
			close(t.drained)
		}
	}
}

// untrack is forget, taking the lock.
func (t *Tunnels) untrack(s *Slot) {
	t.mu.Lock()
	t.forget(s)
	t.mu.Unlock()
}

func (s *Slot) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
}

// Shutdown refuses new tunnels, closes the listener, and waits for the
// relays and the tunnels being prepared to end; when ctx ends first it
// closes them and returns ctx's error. A relay cannot tell an idle
// connection from a busy one inside TLS it does not read, so none is cut
// early. The tunnels already fed to the server are the server's to drain.
func (t *Tunnels) Shutdown(ctx context.Context) error {
	t.ln.Close()
	t.mu.Lock()
	t.closing = true
	if t.drained == nil {
		t.drained = make(chan struct{})
		if len(t.live) == 0 {
			close(t.drained)
		}
	}
	drained := t.drained
	t.mu.Unlock()
	select {
	case <-drained:
		return nil
	case <-ctx.Done():
		t.Close()
		return ctx.Err()
	}
}

// Close refuses new tunnels, closes the listener, and closes the tunnels
// this package runs.
func (t *Tunnels) Close() error {
	t.ln.Close()
	t.mu.Lock()
	t.closing = true
	live := make([]*Slot, 0, len(t.live))
	for s := range t.live {
		live = append(live, s)
	}
	t.mu.Unlock()
	for _, s := range live {
		s.closeConns()
	}
	return nil
}

// Listener is where the tunnels that Serve prepared are accepted, for a
// server to serve as if it had accepted them itself: they get its
// keep-alive, timeouts and graceful shutdown.
func (t *Tunnels) Listener() net.Listener { return t.ln }
