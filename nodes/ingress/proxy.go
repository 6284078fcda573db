package ingress

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"berth.dev/berth/nodes/api"
)

// Defaults of Options.
const (
	DefaultHTTPPort  = 80
	DefaultHTTPSPort = 443
	// DefaultDialTimeout bounds connecting to an endpoint
	// (ingress-nginx's proxy-connect-timeout).
	DefaultDialTimeout = 5 * time.Second
	// DefaultResponseHeaderTimeout bounds the wait for an endpoint's
	// response headers once the request is sent (proxy-read-timeout).
	DefaultResponseHeaderTimeout = 60 * time.Second
	// DefaultIdleConnTimeout is how long an idle connection to an
	// endpoint is kept for reuse.
	DefaultIdleConnTimeout = 90 * time.Second
	// DefaultMaxIdleConnsPerEndpoint is how many idle connections are
	// kept to each endpoint.
	DefaultMaxIdleConnsPerEndpoint = 64
	// DefaultMaxAttempts is how many endpoints a request is tried on
	// (proxy-next-upstream-tries).
	DefaultMaxAttempts = 3
	// DefaultFailTimeout is how long an endpoint that refused a
	// connection is tried only after the others.
	DefaultFailTimeout = 5 * time.Second
	// DefaultDrainTimeout bounds how long requests in flight may take to
	// finish when the proxy stops or a listener goes away.
	DefaultDrainTimeout = 30 * time.Second
	// DefaultReadHeaderTimeout bounds how long a client may take to send
	// a request's headers.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultIdleTimeout is how long an idle client connection is kept
	// open (nginx's keepalive_timeout).
	DefaultIdleTimeout = 75 * time.Second
	// rebindInterval is how often ListenAndServe retries binding an
	// address that failed.
	rebindInterval = 5 * time.Second
	// warnInterval spaces out the warnings of one backend's failures.
	warnInterval = 10 * time.Second
)

// ErrServing is returned by Serve and ListenAndServe when the proxy is
// already serving.
var ErrServing = errors.New("ingress proxy is already serving")

// Options configure a Proxy. Zero durations and counts take the defaults.
type Options struct {
	// Addrs are the machine's addresses: ListenAndServe serves HTTP and
	// HTTPS on each, on the ports the Ingress names.
	Addrs []netip.Addr
	// DialTimeout bounds connecting to an endpoint.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for an endpoint's response
	// headers after the request was sent.
	ResponseHeaderTimeout time.Duration
	// IdleConnTimeout is how long an idle connection to an endpoint is
	// kept.
	IdleConnTimeout time.Duration
	// MaxIdleConnsPerEndpoint is how many idle connections are kept to
	// each endpoint.
	MaxIdleConnsPerEndpoint int
	// MaxAttempts is how many endpoints a request that cannot reach one
	// is tried on.
	MaxAttempts int
	// FailTimeout is how long an endpoint that refused a connection is
	// chosen only when no other is left.
	FailTimeout time.Duration
	// DrainTimeout bounds how long requests in flight get to finish when
	// the proxy stops; upgraded connections (WebSocket) still open then
	// are closed.
	DrainTimeout time.Duration
	// ReadHeaderTimeout and IdleTimeout bound client connections.
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	// NoSSLRedirect turns off the 308 redirect of plain HTTP requests
	// for hosts that have a certificate (ingress-nginx's ssl-redirect,
	// on by default).
	NoSSLRedirect bool
	// Logger gets a line per listener started and stopped, per problem
	// and, at debug level, per request.
	Logger *slog.Logger
}

// Validate checks the options.
func (o *Options) Validate() error {
	for _, a := range o.Addrs {
		if !a.IsValid() {
			return errors.New("invalid listen address")
		}
	}
	for _, d := range []time.Duration{o.DialTimeout, o.ResponseHeaderTimeout, o.IdleConnTimeout, o.FailTimeout, o.DrainTimeout, o.ReadHeaderTimeout, o.IdleTimeout} {
		if d < 0 {
			return errors.New("negative timeout")
		}
	}
	if o.MaxIdleConnsPerEndpoint < 0 || o.MaxAttempts < 0 {
		return errors.New("negative count")
	}
	return nil
}

func (o *Options) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.DialTimeout, DefaultDialTimeout)
	def(&o.ResponseHeaderTimeout, DefaultResponseHeaderTimeout)
	def(&o.IdleConnTimeout, DefaultIdleConnTimeout)
	def(&o.FailTimeout, DefaultFailTimeout)
	def(&o.DrainTimeout, DefaultDrainTimeout)
	def(&o.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&o.IdleTimeout, DefaultIdleTimeout)
	if o.MaxIdleConnsPerEndpoint == 0 {
		o.MaxIdleConnsPerEndpoint = DefaultMaxIdleConnsPerEndpoint
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Proxy is the ingress proxy of one machine. Its ServeHTTP routes one
// request with the table of the last Update.
type Proxy struct {
	opts      Options
	log       *slog.Logger
	transport *http.Transport
	fallback  *tls.Certificate
	tlsConfig *tls.Config
	bufs      *bufferPool
	m         *metrics
	// errorLog takes net/http's own complaints (TLS handshakes that
	// fail, copy errors) at debug level.
	errorLog *log.Logger

	table atomic.Pointer[table]
	// redirectPort, when non-zero, is the HTTPS port redirects name
	// (that of the listener Serve was given) instead of the Ingress's.
	redirectPort atomic.Int32

	updateMu  sync.Mutex // serializes Update
	endpoints endpointSet
	// portsChanged wakes ListenAndServe when an Update changed ports.
	portsChanged chan struct{}

	runMu sync.Mutex
	run   *run // the Serve in progress, nil when none
}

// table is what one Update made: immutable.
type table struct {
	routes    *routes
	certs     *certs
	warnings  []Warning
	httpPort  int
	httpsPort int
}

// New makes a Proxy that routes nothing (404) until Update, and binds
// nothing until Serve or ListenAndServe.
func New(o Options) (*Proxy, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("ingress proxy: %w", err)
	}
	o.setDefaults()
	fallback, err := selfSigned(time.Now())
	if err != nil {
		return nil, fmt.Errorf("ingress proxy: default certificate: %w", err)
	}
	p := &Proxy{
		opts:     o,
		log:      o.Logger,
		fallback: fallback,
		bufs:     &bufferPool{},
		m:        newMetrics(),
		errorLog: slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug),
		transport: &http.Transport{
			DialContext:           dialer(o.DialTimeout),
			ResponseHeaderTimeout: o.ResponseHeaderTimeout,
			IdleConnTimeout:       o.IdleConnTimeout,
			MaxIdleConns:          0, // no total limit: MaxIdleConnsPerHost bounds each endpoint
			MaxIdleConnsPerHost:   o.MaxIdleConnsPerEndpoint,
			ExpectContinueTimeout: time.Second,
			// Answers pass through as the endpoint encoded them.
			DisableCompression: true,
			// Endpoints are plain HTTP/1.1: no proxy from the
			// environment, no HTTP/2 attempt.
			Proxy:             nil,
			ForceAttemptHTTP2: false,
		},
		portsChanged: make(chan struct{}, 1),
	}
	p.tlsConfig = &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			return p.table.Load().certs.get(hello.ServerName), nil
		},
	}
	p.Update(nil)
	return p, nil
}

// Update replaces the routing table with one made from in: requests that
// start after it returns use it, those in flight finish with the one they
// started with.
// Endpoints keep their state (requests in flight, a recent failure)
// across tables. A nil Ingress routes nothing. The warnings say what of in
// is not served as written; they are also kept for Warnings.
func (p *Proxy) Update(in *api.Ingress) []Warning {
	p.updateMu.Lock()
	defer p.updateMu.Unlock()
	newBackend, done := p.endpoints.build()
	rts, warns := compileRoutes(in, func(ib api.IngressBackend) *backend {
		b := newBackend(ib)
		b.proxy = p.reverseProxy(b)
		return b
	})
	done()
	t := &table{routes: rts, httpPort: DefaultHTTPPort, httpsPort: DefaultHTTPSPort}
	var tlsEntries []api.IngressTLS
	if in != nil {
		tlsEntries = in.TLS
		t.httpPort = port(in.HTTPPort, DefaultHTTPPort, "httpPort", &warns)
		t.httpsPort = port(in.HTTPSPort, DefaultHTTPSPort, "httpsPort", &warns)
	}
	if t.httpPort == t.httpsPort {
		warns = append(warns, Warning{"", fmt.Sprintf("httpPort and httpsPort are both %d: HTTPS is not served", t.httpPort)})
	}
	var certWarns []Warning
	t.certs, certWarns = compileCerts(tlsEntries, p.fallback, time.Now())
	t.warnings = append(warns, certWarns...)
	p.m.warnings.Set(float64(len(t.warnings)))
	old := p.table.Swap(t)
	if old != nil && (old.httpPort != t.httpPort || old.httpsPort != t.httpsPort) {
		select {
		case p.portsChanged <- struct{}{}:
		default:
		}
	}
	return slices.Clone(t.warnings)
}

// port is an Ingress's port, def when it is zero or out of range.
func port(p int32, def int, name string, warns *[]Warning) int {
	switch {
	case p == 0:
		return def
	case p < 0 || p > 65535:
		*warns = append(*warns, Warning{"", fmt.Sprintf("%s %d is out of range: %d is served", name, p, def)})
		return def
	}
	return int(p)
}

// Warnings are those of the last Update.
func (p *Proxy) Warnings() []Warning { return slices.Clone(p.table.Load().warnings) }

// Collectors are the proxy's Prometheus metrics, for the caller to
// register.
func (p *Proxy) Collectors() []prometheus.Collector { return p.m.collectors() }

// reverseProxy makes the handler that forwards to one backend.
func (p *Proxy) reverseProxy(b *backend) http.Handler {
	return &httputil.ReverseProxy{
		Rewrite: rewrite,
		Transport: &balancer{
			b:           b,
			rt:          p.transport,
			maxAttempts: p.opts.MaxAttempts,
			failTimeout: p.opts.FailTimeout,
			onRetry:     p.retried,
		},
		BufferPool:     p.bufs,
		ModifyResponse: p.m.response,
		ErrorHandler:   p.proxyError(b),
		ErrorLog:       p.errorLog,
	}
}

// rewrite makes the request sent to an endpoint: the client's Host, the
// path as the client sent it, and X-Forwarded-For/-Host/-Proto/-Port and
// X-Real-IP of this hop (the proxy is the edge: what clients say in them
// is not passed on). The balancer fills in the endpoint.
func rewrite(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = "http"
	pr.SetXForwarded()
	if ip := pr.Out.Header.Get("X-Forwarded-For"); ip != "" {
		pr.Out.Header["X-Real-Ip"] = []string{ip}
	}
	if la, ok := pr.In.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ta, ok := la.(*net.TCPAddr); ok {
			pr.Out.Header["X-Forwarded-Port"] = []string{strconv.Itoa(ta.Port)}
		}
	}
}

// retried counts and logs a request sent to another endpoint after e
// failed with err.
func (p *Proxy) retried(b *backend, e *endpoint, err error) {
	p.m.retries.Inc()
	p.log.Debug("ingress retrying on another endpoint", "service", b.service, "endpoint", e.hostport, "err", err)
}

// proxyError answers a request that no endpoint took.
func (p *Proxy) proxyError(b *backend) func(http.ResponseWriter, *http.Request, error) {
	var lastWarn atomic.Int64
	return func(w http.ResponseWriter, r *http.Request, err error) {
		if r.Context().Err() != nil {
			// The client went away: nobody reads an answer.
			p.log.Debug("ingress client gone", "service", b.service, "err", err)
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		now := time.Now().UnixNano()
		if last := lastWarn.Load(); now-last >= int64(warnInterval) && lastWarn.CompareAndSwap(last, now) {
			p.log.Warn("ingress backend unreachable", "service", b.service, "endpoints", len(b.eps), "err", err)
		}
		if errors.Is(err, errNoEndpoint) {
			p.m.noEndpoint.Inc()
			plainError(w, http.StatusServiceUnavailable, "no ready endpoint behind this route")
			return
		}
		p.m.badGateway.Inc()
		plainError(w, http.StatusBadGateway, "no endpoint behind this route answered")
	}
}

// plainError writes a short text answer.
func plainError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	fmt.Fprintf(w, "%d %s: %s\n", code, strings.ToLower(http.StatusText(code)), msg)
}

// acmeChallengePrefix is where ACME HTTP-01 challenges are answered: never
// redirected to HTTPS.
const acmeChallengePrefix = "/.well-known/acme-challenge/"

// ServeHTTP routes one request: to HTTPS when its host has a certificate
// and it came over plain HTTP, else to the backend of the matching path,
// else to the DefaultBackend, else 404.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := p.table.Load()
	host := requestHost(r.Host)
	if p.log.Enabled(r.Context(), slog.LevelDebug) {
		sw := &statusWriter{ResponseWriter: w}
		start := time.Now()
		w = sw
		defer func() {
			p.log.Debug("ingress request", "method", r.Method, "host", host, "path", r.URL.Path,
				"status", sw.status, "bytes", sw.bytes, "client", r.RemoteAddr, "duration", time.Since(start))
		}()
	}
	if r.Method == http.MethodConnect {
		// Not a forward proxy.
		p.m.refused.Inc()
		plainError(w, http.StatusMethodNotAllowed, "CONNECT is not proxied")
		return
	}
	if r.TLS == nil && !p.opts.NoSSLRedirect && !strings.HasPrefix(r.URL.Path, acmeChallengePrefix) {
		if _, ok := t.certs.covering(host); ok {
			p.m.redirected.Inc()
			p.redirect(w, r, t, host)
			return
		}
	}
	b := t.routes.def
	if rt := t.routes.match(host, r.URL.Path); rt != nil {
		b = rt.backend
	}
	switch {
	case b == nil:
		p.m.notFound.Inc()
		plainError(w, http.StatusNotFound, "no route for this host and path")
	case len(b.eps) == 0:
		p.m.noEndpoint.Inc()
		plainError(w, http.StatusServiceUnavailable, "no ready endpoint behind this route")
	default:
		b.proxy.ServeHTTP(w, r)
	}
}

// redirect sends a plain HTTP request to HTTPS with 308, which keeps the
// method and body.
func (p *Proxy) redirect(w http.ResponseWriter, r *http.Request, t *table, host string) {
	port := int(p.redirectPort.Load())
	if port == 0 {
		port = t.httpsPort
	}
	target := "https://" + host
	if port != DefaultHTTPSPort {
		target += ":" + strconv.Itoa(port)
	}
	target += r.URL.RequestURI()
	w.Header().Set("Location", target)
	w.WriteHeader(http.StatusPermanentRedirect)
}

// statusWriter remembers the status and size of an answer for the
// request log. Unwrap lets the ReverseProxy flush and hijack through it.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 || s.status < 200 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// bufferPool lends the ReverseProxy its copy buffers. It keeps pointers
// to arrays, so that giving a buffer back allocates nothing.
type bufferPool struct{ p sync.Pool }

const bufferSize = 32 << 10

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[bufferSize]byte); ok {
		return v[:]
	}
	return make([]byte, bufferSize)
}

func (b *bufferPool) Put(buf []byte) {
	if cap(buf) >= bufferSize {
		b.p.Put((*[bufferSize]byte)(buf[:bufferSize]))
	}
}
