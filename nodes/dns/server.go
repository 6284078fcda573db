package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Options.
const (
	DefaultAttemptTimeout  = 2 * time.Second
	DefaultQueryTimeout    = 5 * time.Second
	DefaultUpstreamBackoff = 10 * time.Second
	// DefaultMaxForwards is how many forwarded queries may wait for an
	// upstream at once (CoreDNS's forward plugin has the same knob).
	DefaultMaxForwards = 1000
	// DefaultResolvConfPoll is how often the machine's resolv.conf is
	// looked at for changed resolvers.
	DefaultResolvConfPoll = 5 * time.Second
	// ednsSize is the UDP payload size this server announces (the DNS
	// flag day 2020 value, safe from fragmentation).
	ednsSize = 1232
	// shutdownGrace bounds how long Run waits for queries in flight.
	shutdownGrace = 5 * time.Second
)

// Options configure a Server.
type Options struct {
	// Listen are the addresses ("ip:port") to serve on, each on UDP and
	// TCP with the same port; port 0 picks a free one for both.
	Listen []string
	// Upstreams are the resolvers to forward to ("ip" or "ip:port").
	// When empty they are read from ResolvConf.
	Upstreams []string
	// ResolvConf is the machine's resolv.conf; DefaultResolvConf when
	// empty. Its loopback nameservers and this server's own addresses
	// are left out, so that a query never comes back to us.
	ResolvConf string
	// ResolvConfPoll is how often ResolvConf is looked at for a change
	// of resolvers (when Upstreams is empty); DefaultResolvConfPoll when
	// zero.
	ResolvConfPoll time.Duration
	// View is the first set of records; an empty View of DefaultDomain
	// when nil.
	View *View
	// AttemptTimeout is how long one upstream gets to answer.
	AttemptTimeout time.Duration
	// QueryTimeout bounds a forwarded query over all upstreams.
	QueryTimeout time.Duration
	// UpstreamBackoff is how long an upstream that failed is tried only
	// after the others.
	UpstreamBackoff time.Duration
	// MaxForwards bounds the queries waiting for an upstream at once;
	// beyond it queries are REFUSED at once rather than piling up
	// goroutines while upstreams are slow. DefaultMaxForwards when zero.
	MaxForwards int
	// Logger gets a line at start and, at debug level, one per query.
	Logger *slog.Logger
}

// Validate checks the options.
func (o *Options) Validate() error {
	if len(o.Listen) == 0 {
		return errors.New("no listen address")
	}
	for _, a := range o.Listen {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			return fmt.Errorf("listen address %q: %w", a, err)
		}
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("listen address %q: host is not an IP address", a)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return fmt.Errorf("listen address %q: bad port", a)
		}
	}
	for _, u := range o.Upstreams {
		if _, err := upstreamAddr(u); err != nil {
			return err
		}
	}
	for _, d := range []time.Duration{o.AttemptTimeout, o.QueryTimeout, o.UpstreamBackoff, o.ResolvConfPoll} {
		if d < 0 {
			return errors.New("negative timeout")
		}
	}
	if o.MaxForwards < 0 {
		return errors.New("negative MaxForwards")
	}
	return nil
}

// Server is the cluster DNS server of one machine.
type Server struct {
	opts Options
	log  *slog.Logger
	view atomic.Pointer[View]
	fwd  *forwarder
	m    *metrics
	rr   atomic.Uint32 // rotation of multi-address answers
	// forwards holds a token per query waiting for an upstream.
	forwards chan struct{}
	// resolvStamp is the resolv.conf the upstreams were read from.
	resolvStamp fileStamp

	mu    sync.Mutex
	udp   []net.PacketConn
	tcp   []net.Listener
	addrs []string
}

// New makes a Server; it reads the upstream resolvers but binds nothing
// until Listen or Run.
func New(o Options) (*Server, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("dns server: %w", err)
	}
	if o.AttemptTimeout == 0 {
		o.AttemptTimeout = DefaultAttemptTimeout
	}
	if o.QueryTimeout == 0 {
		o.QueryTimeout = DefaultQueryTimeout
	}
	if o.UpstreamBackoff == 0 {
		o.UpstreamBackoff = DefaultUpstreamBackoff
	}
	if o.ResolvConf == "" {
		o.ResolvConf = DefaultResolvConf
	}
	if o.MaxForwards == 0 {
		o.MaxForwards = DefaultMaxForwards
	}
	if o.ResolvConfPoll == 0 {
		o.ResolvConfPoll = DefaultResolvConfPoll
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: o, log: log.With("component", "dns"), m: newMetrics(), forwards: make(chan struct{}, o.MaxForwards)}

	var ups []string
	if len(o.Upstreams) > 0 {
		for _, u := range o.Upstreams {
			a, _ := upstreamAddr(u) // checked by Validate
			ups = append(ups, a)
		}
	} else {
		var err error
		if s.resolvStamp, err = stamp(o.ResolvConf); err == nil {
			ups, err = s.readUpstreams()
		}
		if err != nil {
			return nil, fmt.Errorf("dns server: %w", err)
		}
	}
	s.fwd = newForwarder(ups, o.AttemptTimeout, o.UpstreamBackoff)

	v := o.View
	if v == nil {
		var err error
		if v, err = NewView(Input{}); err != nil {
			return nil, fmt.Errorf("dns server: %w", err)
		}
	}
	s.view.Store(v)
	return s, nil
}

// readUpstreams reads the resolvers from the resolv.conf, without those
// that are this server.
func (s *Server) readUpstreams() ([]string, error) {
	var own []netip.Addr
	for _, a := range s.opts.Listen {
		host, _, _ := net.SplitHostPort(a)
		own = append(own, netip.MustParseAddr(host))
	}
	return Upstreams(s.opts.ResolvConf, own)
}

// fileStamp tells whether a file changed.
type fileStamp struct {
	mod  time.Time
	size int64
	ino  uint64
}

func stamp(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, fmt.Errorf("read upstream resolvers: %w", err)
	}
	st := fileStamp{mod: fi.ModTime(), size: fi.Size()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino
	}
	return st, nil
}

// watchResolvConf re-reads the upstreams when the machine's resolv.conf
// changes (DHCP, a VPN, resolvconf replace it, often by rename), looking
// every ResolvConfPoll until ctx is done.
func (s *Server) watchResolvConf(ctx context.Context) {
	tick := time.NewTicker(s.opts.ResolvConfPoll)
	defer tick.Stop()
	last := s.resolvStamp
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		st, err := stamp(s.opts.ResolvConf)
		if err != nil || st == last {
			continue // a missing file keeps the resolvers we have
		}
		ups, err := s.readUpstreams()
		if err != nil {
			s.log.Warn("dns upstreams not re-read", "resolv_conf", s.opts.ResolvConf, "error", err)
			continue
		}
		last = st
		if slices.Equal(ups, s.fwd.addrs()) {
			continue
		}
		s.fwd.set(ups)
		s.log.Info("dns upstreams changed", "resolv_conf", s.opts.ResolvConf, "upstreams", ups)
	}
}

// Update replaces the records served; queries in flight finish with the
// View they started with.
func (s *Server) Update(v *View) {
	if v != nil {
		s.view.Store(v)
	}
}

// View is the View being served.
func (s *Server) View() *View { return s.view.Load() }

// Upstreams are the resolvers queries are forwarded to (ip:port).
func (s *Server) Upstreams() []string {
	return s.fwd.addrs()
}

// Collectors are the server's Prometheus counters, for the caller to
// register.
func (s *Server) Collectors() []prometheus.Collector { return s.m.collectors() }

// Addrs are the addresses the server listens on (ip:port, UDP and TCP
// alike), once Listen has run.
func (s *Server) Addrs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.addrs)
}

// Listen binds the UDP and TCP sockets. Run calls it when it has not been
// called; calling it first reports a busy address before anything runs
// and tells Addrs the ports that were picked.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.udp != nil {
		return nil
	}
	for _, a := range s.opts.Listen {
		pc, ln, err := listenPair(a)
		if err != nil {
			s.closeLocked()
			return err
		}
		s.udp = append(s.udp, pc)
		s.tcp = append(s.tcp, ln)
		s.addrs = append(s.addrs, ln.Addr().String())
	}
	return nil
}

// Close releases the sockets Listen bound, for a caller that will not Run
// after all. Run releases them itself when it returns.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked()
	return nil
}

func (s *Server) closeLocked() {
	for _, c := range s.udp {
		c.Close()
	}
	for _, l := range s.tcp {
		l.Close()
	}
	s.udp, s.tcp, s.addrs = nil, nil, nil
}

// listenPair binds UDP and TCP on one address and the same port.
func listenPair(addr string) (net.PacketConn, net.Listener, error) {
	host, port, _ := net.SplitHostPort(addr)
	for range 20 {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen udp %s: %w", addr, err)
		}
		p := strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port)
		ln, err := net.Listen("tcp", net.JoinHostPort(host, p))
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if port != "0" || !errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil, fmt.Errorf("listen tcp %s: %w", net.JoinHostPort(host, p), err)
		}
		// The port picked for UDP is taken on TCP: pick another.
	}
	return nil, nil, fmt.Errorf("listen %s: no port free on both udp and tcp", addr)
}

// Run serves until ctx is done, then stops taking queries, lets those in
// flight finish (for a few seconds at most) and returns nil. It returns
// an error when a socket cannot be bound or serving fails.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	udp, tcp := s.udp, s.tcp
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.closeLocked()
		s.mu.Unlock()
	}()

	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) { s.serve(ctx, w, r) })
	var servers []*runningServer
	for _, pc := range udp {
		servers = append(servers, &runningServer{srv: &dns.Server{PacketConn: pc, Handler: handler, UDPSize: dns.DefaultMsgSize}})
	}
	for _, ln := range tcp {
		servers = append(servers, &runningServer{srv: &dns.Server{Listener: ln, Handler: handler}})
	}
	failed := make(chan error, len(servers))
	for _, rs := range servers {
		rs.start(failed)
	}
	v := s.view.Load()
	s.log.Info("dns serving", "listen", s.Addrs(), "domain", v.Domain(), "upstreams", s.Upstreams())
	if len(s.fwd.addrs()) == 0 {
		s.log.Warn("dns has no upstream resolver: names outside the cluster get SERVFAIL", "resolv_conf", s.opts.ResolvConf)
	}

	if len(s.opts.Upstreams) == 0 {
		wctx, stopWatch := context.WithCancel(ctx)
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			s.watchResolvConf(wctx)
		}()
		defer func() {
			stopWatch()
			<-watched
		}()
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-failed:
		err = fmt.Errorf("dns serve: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	for _, rs := range servers {
		rs.stop(sctx)
	}
	return err
}

// runningServer is one miekg/dns server, with what is needed to stop it
// whether or not it got as far as serving.
type runningServer struct {
	srv     *dns.Server
	started chan struct{}
	done    chan struct{}
}

func (r *runningServer) start(failed chan<- error) {
	r.started = make(chan struct{})
	r.done = make(chan struct{})
	r.srv.NotifyStartedFunc = func() { close(r.started) }
	go func() {
		defer close(r.done)
		if err := r.srv.ActivateAndServe(); err != nil {
			failed <- err
		}
	}()
}

func (r *runningServer) stop(ctx context.Context) {
	select {
	case <-r.started:
		r.srv.ShutdownContext(ctx) // its only error is "not started"
	case <-r.done:
	}
	select {
	case <-r.done:
	case <-ctx.Done():
	}
}

// serve answers one query.
func (s *Server) serve(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) {
	start := time.Now()
	_, tcp := w.LocalAddr().(*net.TCPAddr)
	if tcp {
		s.m.tcp.Inc()
	} else {
		s.m.udp.Inc()
	}
	resp, source := s.respond(ctx, r, tcp)
	size := dns.MaxMsgSize
	if !tcp {
		size = dns.MinMsgSize
		if opt := r.IsEdns0(); opt != nil {
			size = max(int(opt.UDPSize()), dns.MinMsgSize)
		}
	}
	resp.Truncate(size)
	err := w.WriteMsg(resp)
	if err != nil {
		s.m.writeFailed.Inc()
	}
	if s.log.Enabled(ctx, slog.LevelDebug) {
		attrs := []slog.Attr{
			slog.String("client", w.RemoteAddr().String()),
			slog.Bool("tcp", tcp),
			slog.String("source", source),
			slog.String("rcode", rcodeName(resp.Rcode)),
			slog.Int("answers", len(resp.Answer)),
			slog.Bool("truncated", resp.Truncated),
			slog.Duration("duration", time.Since(start)),
		}
		if len(r.Question) > 0 {
			q := r.Question[0]
			attrs = append(attrs, slog.String("name", q.Name), slog.String("type", dns.Type(q.Qtype).String()))
		}
		if err != nil {
			attrs = append(attrs, slog.String("error", err.Error()))
		}
		s.log.LogAttrs(ctx, slog.LevelDebug, "dns query", attrs...)
	}
}

// respond makes the response to r and says where it came from: "cluster"
// (the View), "forward" (an upstream) or "error".
func (s *Server) respond(ctx context.Context, r *dns.Msg, tcp bool) (*dns.Msg, string) {
	if r.Opcode != dns.OpcodeQuery {
		s.m.malformedQuery.Inc()
		return s.errorReply(r, dns.RcodeNotImplemented), "error"
	}
	if len(r.Question) != 1 {
		s.m.malformedQuery.Inc()
		return s.errorReply(r, dns.RcodeFormatError), "error"
	}
	q := r.Question[0]
	v := s.view.Load()
	if q.Qclass == dns.ClassINET {
		if res, ok := v.Lookup(q.Name, q.Qtype); ok {
			return s.local(ctx, r, res, tcp), "cluster"
		}
	} else if v.InZone(q.Name) {
		resp := s.errorReply(r, dns.RcodeRefused)
		s.m.answer(resp.Rcode).Inc()
		return resp, "cluster"
	}

	resp, err := s.forward(ctx, r, tcp)
	if errors.Is(err, errOverload) {
		return s.errorReply(r, dns.RcodeRefused), "error"
	}
	if err != nil {
		return s.errorReply(r, dns.RcodeServerFailure), "error"
	}
	s.m.forward(resp.Rcode).Inc()
	return resp, "forward"
}

// errOverload is a forward refused because MaxForwards are waiting.
var errOverload = errors.New("too many forwarded queries waiting")

// forward sends q to the upstreams within the query timeout, if a slot
// is free; failures are counted here.
func (s *Server) forward(ctx context.Context, q *dns.Msg, tcp bool) (*dns.Msg, error) {
	select {
	case s.forwards <- struct{}{}:
		defer func() { <-s.forwards }()
	default:
		s.m.overload.Inc()
		return nil, errOverload
	}
	fctx, cancel := context.WithTimeout(ctx, s.opts.QueryTimeout)
	defer cancel()
	resp, _, err := s.fwd.exchange(fctx, q, tcp, s.upstreamFailed)
	if err != nil {
		s.m.forwardFailed.Inc()
		if s.log.Enabled(ctx, slog.LevelDebug) {
			s.log.LogAttrs(ctx, slog.LevelDebug, "dns forward failed", slog.String("error", err.Error()))
		}
		return nil, err
	}
	return resp, nil
}

func (s *Server) upstreamFailed(upstream string, err error) {
	s.m.upstreamFailures.WithLabelValues(upstream).Inc()
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.LogAttrs(context.Background(), slog.LevelDebug, "dns upstream failed", slog.String("upstream", upstream), slog.String("error", err.Error()))
	}
}

// local turns a View's Result into a response, resolving an ExternalName's
// target upstream when it is outside the cluster domain.
func (s *Server) local(ctx context.Context, r *dns.Msg, res Result, tcp bool) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	m.RecursionAvailable = true
	m.Rcode = res.Rcode
	m.Answer = s.rotate(res.Answer)
	m.Ns = slices.Clip(res.Ns)
	m.Extra = slices.Clip(res.Extra)
	if res.Chase != "" {
		s.chase(ctx, r, m, res.Chase, tcp)
	}
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(ednsSize, false)
	}
	s.m.answer(m.Rcode).Inc()
	return m
}

// chase resolves the out-of-zone target of a CNAME upstream and appends
// what it finds; the final name's rcode becomes the response's (RFC 6604).
func (s *Server) chase(ctx context.Context, r *dns.Msg, m *dns.Msg, target string, tcp bool) {
	q := new(dns.Msg)
	q.SetQuestion(target, r.Question[0].Qtype)
	q.RecursionDesired = true
	if opt := r.IsEdns0(); opt != nil {
		q.SetEdns0(opt.UDPSize(), false)
	}
	resp, err := s.forward(ctx, q, tcp)
	if err != nil {
		m.Rcode = dns.RcodeServerFailure
		return
	}
	m.Answer = append(slices.Clip(m.Answer), resp.Answer...)
	m.Rcode = resp.Rcode
	if resp.Rcode == dns.RcodeNameError || len(resp.Answer) == 0 {
		m.Ns = resp.Ns
	}
}

// rotate turns a set of addresses round by one each time, so that
// clients taking the first spread over a headless Service's pods.
func (s *Server) rotate(rrs []dns.RR) []dns.RR {
	n := len(rrs)
	if n < 2 {
		return slices.Clip(rrs)
	}
	if t := rrs[0].Header().Rrtype; t != dns.TypeA && t != dns.TypeAAAA {
		return slices.Clip(rrs)
	}
	k := int(s.rr.Add(1) % uint32(n))
	out := make([]dns.RR, 0, n)
	out = append(out, rrs[k:]...)
	return append(out, rrs[:k]...)
}

func (s *Server) errorReply(r *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(r, rcode)
	m.RecursionAvailable = true
	if rcode == dns.RcodeFormatError || rcode == dns.RcodeNotImplemented {
		m.Question = nil
	}
	if r.IsEdns0() != nil {
		m.SetEdns0(ednsSize, false)
	}
	return m
}
