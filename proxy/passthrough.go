package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// hostPattern is one intercept.passthrough entry: an exact host (a name or
// an IP literal), "*.suffix", or "*", with a port (443 when none is given).
type hostPattern struct {
	host   string // lower case; for a suffix pattern, ".suffix"
	suffix bool
	any    bool
	port   string
}

type hostPatterns []hostPattern

// CheckPassthrough reports the first of intercept.passthrough's patterns
// that NewPassthrough would refuse.
func CheckPassthrough(patterns []string) error {
	_, err := parsePassthrough(patterns)
	return err
}

// parsePassthrough parses intercept.passthrough's patterns (README, "Apps
// that keep https:// URLs"): api.stripe.com, *.amazonaws.com, *, each
// optionally with :port; IPv6 literals in brackets when a port follows.
func parsePassthrough(patterns []string) (hostPatterns, error) {
	var ps hostPatterns
	for _, raw := range patterns {
		p, err := parseHostPattern(strings.TrimSpace(raw))
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

func parseHostPattern(raw string) (hostPattern, error) {
	s := strings.ToLower(raw)
	host, port := s, "443"
	if ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); ip != nil {
		host = ip.String()
	} else if strings.Contains(s, ":") {
		var err error
		if host, port, err = net.SplitHostPort(s); err != nil {
			return hostPattern{}, fmt.Errorf("pattern %q: %w", raw, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return hostPattern{}, fmt.Errorf("pattern %q: %q is not a port", raw, port)
		}
		if ip := net.ParseIP(host); ip != nil {
			host = ip.String()
		}
	}
	p := hostPattern{host: strings.TrimSuffix(host, "."), port: port}
	switch {
	case p.host == "*":
		p.any = true
	case strings.HasPrefix(p.host, "*."):
		p.host, p.suffix = p.host[1:], true
	}
	rest := p.host
	if p.any {
		rest = "x"
	}
	if rest == "" || rest == "." || strings.ContainsAny(rest, "*/@ \t[]") {
		return hostPattern{}, fmt.Errorf("pattern %q: not a host name, *.suffix, * or IP address", raw)
	}
	return p, nil
}

// match reports whether a CONNECT to host:port is relayed. An IP literal,
// with a zone or without, matches only a pattern that names it: "*" is for
// names.
func (ps hostPatterns) match(host, port string) bool {
	ok, _ := ps.matchPattern(host, port)
	return ok
}

// matchPattern is match, and whether the pattern that matched is a
// wildcard ("*" or "*.suffix"), which names no host of its own.
func (ps hostPatterns) matchPattern(host, port string) (ok, wildcard bool) {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	ip, err := netip.ParseAddr(host)
	literal := err == nil
	if literal {
		host = ip.WithZone("").String()
	}
	for _, p := range ps {
		if p.port != port {
			continue
		}
		switch {
		case literal:
			if !p.any && !p.suffix && p.host == host {
				return true, false
			}
		case p.any:
			return true, true
		case p.suffix:
			if strings.HasSuffix(host, p.host) {
				return true, true
			}
		case p.host == host:
			return true, false
		}
	}
	return false, false
}

// reachableByWildcard reports whether a wildcard pattern may lead to ip: not
// the proxy's own machine (loopback: its admin port), nor a link-local
// address (the cloud's metadata service), nor an unspecified or multicast
// one. A pattern that names a host or address reaches it whatever it is.
func reachableByWildcard(ip netip.Addr) bool {
	ip = ip.Unmap()
	return !ip.IsLoopback() && !ip.IsLinkLocalUnicast() && !ip.IsLinkLocalMulticast() &&
		!ip.IsUnspecified() && !ip.IsMulticast()
}

// Passthrough owns the tunnels relayed untouched to the hosts
// intercept.passthrough lists: it dials them, copies bytes both ways, closes
// those idle for IdleTimeout, and drains them at shutdown, as a server does
// its connections.
type Passthrough struct {
	hosts    hostPatterns
	dialer   net.Dialer
	resolver *net.Resolver
	idle     time.Duration
	log      *zap.Logger
	// max bounds the tunnels open at once (and so their goroutines and
	// buffers); open counts those open or being dialled.
	max  int64
	open atomic.Int64

	mu      sync.Mutex
	relays  map[*relay]struct{}
	closing bool
	drained chan struct{} // closed when relays empties after Shutdown began
}

// PassthroughConfig configures a Passthrough; zero values pick the defaults
// their comments name.
type PassthroughConfig struct {
	// Hosts are the patterns of the hosts to relay (CheckPassthrough).
	Hosts []string
	// DialTimeout bounds the connection to the host. Zero means 10 s.
	DialTimeout time.Duration
	// IdleTimeout closes a tunnel that carried no byte either way for this
	// long. Zero means DefaultPassthroughIdleTimeout.
	IdleTimeout time.Duration
	// Logger receives one line per relay that ends in an error. Nil means
	// none.
	Logger *zap.Logger
	// MaxTunnels bounds the tunnels open at once; one more is answered 503
	// overloaded (limits.max_in_flight). Zero means no bound.
	MaxTunnels int
}

// DefaultPassthroughIdleTimeout is longer than the idle timeouts of clients'
// keep-alive pools (Go's 90 s, Node's and curl's less) and of common load
// balancers (60-350 s), so a tunnel a client means to reuse is not cut
// under it; a tunnel silent for longer is forgotten, and holds a file
// descriptor and two goroutines for nothing.
const DefaultPassthroughIdleTimeout = 5 * time.Minute

// NewPassthrough returns a Passthrough with no tunnels.
func NewPassthrough(cfg PassthroughConfig) (*Passthrough, error) {
	hosts, err := parsePassthrough(cfg.Hosts)
	if err != nil {
		return nil, fmt.Errorf("proxy: passthrough: %w", err)
	}
	p := &Passthrough{hosts: hosts, idle: cfg.IdleTimeout, log: cfg.Logger, relays: map[*relay]struct{}{},
		resolver: net.DefaultResolver, max: int64(cfg.MaxTunnels)}
	if p.max <= 0 {
		p.max = math.MaxInt64
	}
	p.dialer.Timeout = cfg.DialTimeout
	if p.dialer.Timeout == 0 {
		p.dialer.Timeout = 10 * time.Second
	}
	if p.idle == 0 {
		p.idle = DefaultPassthroughIdleTimeout
	}
	if p.log == nil {
		p.log = zap.NewNop()
	}
	return p, nil
}

// Shutdown refuses new tunnels and waits for the open ones to end; when ctx
// ends first it closes them and returns ctx's error. A relay cannot tell an
// idle connection from a busy one inside TLS it does not read, so it does
// not close any early.
func (p *Passthrough) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closing = true
	if p.drained == nil {
		p.drained = make(chan struct{})
		if len(p.relays) == 0 {
			close(p.drained)
		}
	}
	drained := p.drained
	p.mu.Unlock()
	select {
	case <-drained:
		return nil
	case <-ctx.Done():
		p.Close()
		return ctx.Err()
	}
}

// Close refuses new tunnels and closes the open ones.
func (p *Passthrough) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closing = true
	for r := range p.relays {
		r.close()
	}
	return nil
}

// Open counts the tunnels being relayed.
func (p *Passthrough) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.relays)
}

// start relays between client and server until both directions end or the
// tunnel idles; false means shutdown has begun and both are the caller's
// to close.
func (p *Passthrough) start(client, server net.Conn) bool {
	r := &relay{client: client, server: server}
	r.touch()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return false
	}
	p.relays[r] = struct{}{}
	go p.run(r)
	return true
}

func (p *Passthrough) run(r *relay) {
	errs := make(chan error, 1)
	go func() { errs <- r.pipe(r.server, r.client, p.idle) }()
	err := r.pipe(r.client, r.server, p.idle)
	err = errors.Join(err, <-errs)
	r.close()
	p.open.Add(-1)
	if err != nil {
		p.log.Debug("passthrough tunnel ended", zap.String("host", r.server.RemoteAddr().String()), zap.Error(err))
	}
	p.mu.Lock()
	delete(p.relays, r)
	if p.drained != nil && len(p.relays) == 0 {
		select {
		case <-p.drained:
		default:
			close(p.drained)
		}
	}
	p.mu.Unlock()
}

// relay is one passthrough tunnel.
type relay struct {
	client, server net.Conn
	last           atomic.Int64 // Unix nanoseconds of the last byte either way
	closeOnce      sync.Once
}

func (r *relay) touch() { r.last.Store(time.Now().UnixNano()) }

func (r *relay) close() {
	r.closeOnce.Do(func() {
		r.client.Close()
		r.server.Close()
	})
}

// dial connects to the target of a CONNECT that matched a pattern. A name
// that a wildcard matched is resolved first and dialled only at addresses
// reachableByWildcard allows.
func (p *Passthrough) dial(ctx context.Context, authority string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(authority)
	if err != nil {
		return nil, err
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		// A literal, matched only by a pattern that names it; dialled
		// without its zone, which names an interface of the app's, not ours.
		return p.dialer.DialContext(ctx, "tcp", net.JoinHostPort(ip.WithZone("").String(), port))
	}
	if _, wildcard := p.hosts.matchPattern(host, port); !wildcard {
		return p.dialer.DialContext(ctx, "tcp", authority)
	}
	ctx, cancel := context.WithTimeout(ctx, p.dialer.Timeout)
	defer cancel()
	ips, err := p.resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	var last error = fmt.Errorf("%s resolves to no address a wildcard pattern may reach", host)
	for _, ip := range ips {
		if !reachableByWildcard(ip) {
			continue
		}
		conn, err := p.dialer.DialContext(ctx, "tcp", net.JoinHostPort(ip.Unmap().String(), port))
		if err == nil {
			return conn, nil
		}
		last = err
	}
	return nil, last
}

// pipe copies src to dst. At src's end of stream it half-closes dst, so
// the other direction may go on (a client that shuts down its writing side
// still reads the answer); on an error, or an idle timeout, it closes both.
// The read deadline is moved forward for every read: a tunnel is idle only
// when neither direction moved for the whole idle time.
func (r *relay) pipe(dst, src net.Conn, idle time.Duration) error {
	// A TLS record's worth: the bytes relayed are TLS records.
	buf := make([]byte, 16<<10)
	for {
		src.SetReadDeadline(time.Now().Add(idle))
		n, err := src.Read(buf)
		if n > 0 {
			r.touch()
			dst.SetWriteDeadline(time.Now().Add(idle))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				r.close()
				return werr
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
				return nil
			}
			r.close()
			return nil
		case errors.Is(err, net.ErrClosed):
			return nil
		default:
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() &&
				time.Since(time.Unix(0, r.last.Load())) < idle {
				continue // the other direction is busy
			}
			r.close()
			return err
		}
	}
}

// openPassthrough dials the CONNECT target, answers 200 and relays the
// tunnel untouched: no TLS is terminated and no token is added.
func (h *Handler) openPassthrough(rec *recorder, r *http.Request) {
	pt := h.passthrough
	if pt.open.Add(1) > pt.max {
		pt.open.Add(-1)
		h.writeOverloaded(rec, fmt.Sprintf("this proxy already relays %d passthrough tunnels (limits.max_in_flight): retry later", pt.max))
		return
	}
	opened := false
	defer func() {
		if !opened {
			pt.open.Add(-1)
		}
	}()
	h.metrics.tunnels.WithLabelValues("passthrough").Inc()
	server, err := pt.dial(r.Context(), r.URL.Host)
	if err != nil {
		h.log.Warn("passthrough tunnel: cannot connect", zap.String("host", r.URL.Host), zap.Error(err))
		writeProblem(rec, http.StatusBadGateway, CodeUpstreamUnreachable, "cannot connect to "+r.URL.Host+": "+err.Error())
		return
	}
	client, ok := h.establish(rec)
	if !ok {
		server.Close()
		return
	}
	if !pt.start(client, server) {
		client.Close() // shutting down
		server.Close()
		return
	}
	opened = true // run gives the place back when the tunnel ends
}
